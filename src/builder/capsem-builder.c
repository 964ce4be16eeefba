/* capsem-builder - builds the guest kernel, the minimal initramfs and the Debian rootfs image,
 * cached by content hash, and installs them as verified images.
 *
 * Subcommand dispatch and help; each subcommand lives in its own module (kbuild.c, ibuild.c,
 * image.c, rootfs.c). Runs as the invoking user on the host, single-threaded; its inputs are the user's own
 * files and options, validated so mistakes get one clear line and a non-zero exit. Progress and
 * errors go to stderr, results (paths or JSON) to stdout.
 */
#include <stdio.h>

#include "cfgcmd.h"
#include "config.h"
#include "ibuild.h"
#include "image.h"
#include "kbuild.h"
#include "log.h"
#include "macro.h"
#include "rootfs.h"

static void help(void)
{
	printf("Usage: capsem-builder COMMAND [OPTIONS]\n"
	       "\n"
	       "Build Capsem's guest assets, cached by content hash under $CAPSEM_CACHE\n"
	       "(default ~/.cache/capsem).\n"
	       "\n"
	       "Commands:\n"
	       "  kernel     build the guest kernel (ELF vmlinux) from Debian's linux-source-6.1\n"
	       "  initramfs  build the minimal initramfs (capsem-guest as /init + busybox)\n"
	       "  rootfs     build the Debian root file system of an image config (root)\n"
	       "  image      kernel + initramfs (+ rootfs) installed as an image with a SHA-256\n"
	       "             manifest\n"
	       "  verify     check an image directory against its manifest\n"
	       "  validate   check an image config directory (guest/config)\n"
	       "  plan       show what building an image config would do (layers, keys)\n"
	       "  inspect    describe an installed image (versions, packages, sizes)\n"
	       "  new        start a custom image config from guest/config\n"
	       "  version    print the version\n"
	       "\n"
	       "Run 'capsem-builder COMMAND --help' for a command's options.\n"
	       "Environment: CAPSEM_CACHE, CAPSEM_HOME, CAPSEM_IMAGES_DIR, CAPSEM_DEBUG=1.\n");
}

int main(int argc, char **argv)
{
	log_setup("capsem-builder", LOG_LVL_INFO);
	log_setup_from_env();
	if (argc < 2) {
		help();
		return 2;
	}
	const char *cmd = argv[1];
	if (streq(cmd, "kernel"))
		return cmd_kernel(argc - 1, argv + 1);
	if (streq(cmd, "initramfs"))
		return cmd_initramfs(argc - 1, argv + 1);
	if (streq(cmd, "rootfs"))
		return cmd_rootfs(argc - 1, argv + 1);
	if (streq(cmd, "image"))
		return cmd_image(argc - 1, argv + 1);
	if (streq(cmd, "verify"))
		return cmd_verify(argc - 1, argv + 1);
	if (streq(cmd, "validate"))
		return cmd_validate(argc - 1, argv + 1);
	if (streq(cmd, "plan"))
		return cmd_plan(argc - 1, argv + 1);
	if (streq(cmd, "inspect"))
		return cmd_inspect(argc - 1, argv + 1);
	if (streq(cmd, "new"))
		return cmd_new(argc - 1, argv + 1);
	if (streq(cmd, "version") || streq(cmd, "--version")) {
		printf("capsem-builder %s\n", CAPSEM_VERSION);
		return 0;
	}
	if (streq(cmd, "help") || streq(cmd, "--help") || streq(cmd, "-h")) {
		help();
		return 0;
	}
	log_error("unknown command '%s' (see capsem-builder --help)", cmd);
	return 2;
}
