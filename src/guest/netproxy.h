/* netproxy.h - capsem-net-proxy: the guest end of every outbound TCP connection. */
#pragma once

/* capsem-net-proxy [--listen-fd N | --port P] [--debug]. Returns the exit status. */
int netproxy_main(int argc, char **argv);
