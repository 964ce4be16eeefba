/* dnsproxy.h - capsem-dns-proxy: the guest's resolver at 127.0.0.1:53, forwarding to the host. */
#pragma once

/* capsem-dns-proxy [--udp-fd N --tcp-fd M | --port P] [--debug]. Returns the exit status. */
int dnsproxy_main(int argc, char **argv);
