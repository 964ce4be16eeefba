/* cli-env.c - the CLI's view of its environment: Capsem's home, images, the default image, the
 * emulation warning. Main thread. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clilib.h"
#include "home.h"
#include "log.h"
#include "macro.h"

char *cli_capsem_home(void)
{
	char *p = NULL;
	int r = capsem_home(&p);
	if (r == -ENOENT)
		log_error("cannot tell where Capsem's state lives: set CAPSEM_HOME (or HOME)");
	else if (r < 0)
		log_oom();
	return r < 0 ? NULL : p;
}

char *cli_image_dir(const char *name)
{
	_cleanup_free_ char *d = NULL;
	char *p = NULL;
	if (capsem_images_dir(&d) < 0 || capsem_image_find(d, name, &p) < 0)
		return NULL;
	return p;
}

const char *cli_default_image(void)
{
	const char *e = getenv("CAPSEM_IMAGE");
	_cleanup_free_ char *dir = NULL, *m = NULL;
	if (e && *e)
		return e;
	dir = cli_image_dir("debian");
	if (dir && asprintf(&m, "%s/manifest.json", dir) >= 0 && access(m, F_OK) == 0)
		return "debian";
	return "minimal";
}

void cli_warn_if_emulated(const json_t *vm)
{
	const char *accel = json_string_value(json_object_get(vm, "accel"));
	if (accel && streq(accel, "tcg"))
		log_warn("no usable KVM on this host: the VM runs under TCG emulation, 10-50x "
			 "slower "
			 "(see 'capsem doctor')");
}

int cli_workspace_path(const char *arg, char **ret)
{
	struct stat st;
	char *p = realpath(arg, NULL);
	if (!p)
		return log_error_errno(negative_errno(), "--workspace %s", arg);
	if (stat(p, &st) < 0 || !S_ISDIR(st.st_mode)) {
		free(p);
		return log_error("--workspace %s: not a directory", arg), -ENOTDIR;
	}
	if (strpbrk(p, ",:")) {
		free(p);
		return log_error("--workspace %s: the path may not contain ',' or ':'", arg),
		       -EINVAL;
	}
	*ret = p;
	return 0;
}
