/* image.h - the "image" and "verify" commands: install a kernel + initramfs pair as a named
 * image directory with a manifest (manifest.h), and check one. */
#pragma once

/* "capsem-builder image [OPTIONS]". Returns the process exit status. */
int cmd_image(int argc, char **argv);
/* "capsem-builder verify DIR". Returns the process exit status. */
int cmd_verify(int argc, char **argv);
