/* home.h - where Capsem keeps its state: the one resolver of $CAPSEM_HOME and the user's home.
 *
 * The rule, for every binary: $CAPSEM_HOME when set and non-empty; else $HOME/.capsem; else the
 * home directory of the caller's passwd entry + /.capsem; else an error. Never a guessed path
 * (a daemon without HOME must not quietly use /root). Pure libc; any thread.
 *
 * Images live in two places: the user's images directory (built or downloaded by the user) and
 * the system's, shipped by the package (<datadir>/capsem/images, read-only). A name found in
 * the user's directory hides the system's image of the same name.
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
/* The system images directory: $CAPSEM_SYSTEM_IMAGES_DIR when set and non-empty (tests of an
 * unpacked package), else <datadir>/capsem/images of the build's prefix (/usr/share/capsem/images
 * when installed from the package). A static or environment string; never NULL. */
const char *capsem_system_images_dir(void);
/* The directory of image NAME: <images_dir>/NAME when it holds a manifest.json, else
 * <system images>/NAME when that does, else <images_dir>/NAME (so that a "not found" names the
 * user's directory). Returns 1 when the system's image was chosen, 0 for the user's; *ret is
 * malloc'ed. -ENOMEM (nothing set). */
int capsem_image_find(const char *images_dir, const char *name, char **ret);
