/* cli.h - the capsem command: shared pieces of its subcommands. */
#pragma once

/* Exit statuses of capsem itself (the command's own status is passed through otherwise). */
#define CLI_EXIT_USAGE 2
#define CLI_EXIT_FAILURE 125 /* capsem could not run the command (as docker run) */
#define CLI_EXIT_TIMEOUT 124 /* as timeout(1) */

/* $CAPSEM_HOME, else ~/.capsem. malloc'ed. */
char *cli_capsem_home(void);
/* The directory of image NAME: $CAPSEM_IMAGES_DIR/NAME, else <home>/images/NAME. malloc'ed. */
char *cli_image_dir(const char *name);

int cmd_run(int argc, char **argv);
