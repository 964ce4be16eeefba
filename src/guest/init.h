/* init.h - capsem-init: PID 1 of the guest. */
#pragma once

/* Entry point for the init personality of capsem-guest. Never returns when running as PID 1
 * (it ends with reboot(2)); returns 1 when started as any other process. */
int init_main(int argc, char **argv);
