/* home.h - where Capsem keeps its state: the one resolver of $CAPSEM_HOME and the user's home.
 *
 * The rule, for every binary: $CAPSEM_HOME when set and non-empty; else $HOME/.capsem; else the
 * home directory of the caller's passwd entry + /.capsem; else an error. Never a guessed path
 * (a daemon without HOME must not quietly use /root). Pure libc; any thread.
 */
#pragma once

/* The user's home directory: $HOME, else the passwd entry's. 0 with *ret (malloc'ed), -ENOENT
 * when neither exists (or it is not absolute), -ENOMEM. */
int user_home(char **ret);
/* Capsem's home (rule above). 0 with *ret (malloc'ed), -ENOENT, -ENOMEM. */
int capsem_home(char **ret);
/* The images directory: $CAPSEM_IMAGES_DIR when set and non-empty, else <capsem home>/images.
 * 0 with *ret, -ENOENT, -ENOMEM. */
int capsem_images_dir(char **ret);
