/* init.h - capsem-init: PID 1 of the guest. */
#pragma once

/* The VM's disk (the host's, ext4) is mounted here; it holds /root, the overlay's upper layer and
 * the swap file. */
#define INIT_DISK_DIR "/mnt/capsem-disk"
#define INIT_SWAPFILE INIT_DISK_DIR "/swapfile"
#define INIT_SWAP_MAX_MIB 1024u

/* Entry point for the init personality of capsem-guest. Never returns when running as PID 1
 * (it ends with reboot(2)); returns 1 when started as any other process. */
int init_main(int argc, char **argv);

/* halt, poweroff and reboot in the Debian image (capsem-guest by argv[0]; the minimal image has
 * busybox's): ask PID 1 for its clean shutdown with busybox's signals (SIGUSR1, SIGUSR2,
 * SIGTERM). 0 when PID 1 was signalled, 1 when not, 2 for a usage error. */
int init_power_main(const char *name, int argc, char **argv);
