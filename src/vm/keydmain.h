/* keydmain.h - the key broker's process (keydmain.c, keyd.h). */
#pragma once

/* `capsem-vm --keyd CAPSEM_HOME CORP_POLICY` with its control socket as fd 3: confine, then
 * serve until the control socket ends. Returns the exit status. Also the test front end's
 * (tests/helpers/proxy-front) `--keyd`. */
int keyd_process_main(int argc, char **argv);
