/* chan.h - capsem-chan: the guest's end of the channel mux over the "capsem.chan" virtio-serial
 * port (chan.c). */
#pragma once

/* capsem-chan, the port open as fd 3. Runs until the channel ends; the exit status. */
int chan_main(int argc, char **argv);
