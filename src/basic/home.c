/* home.c - the one resolver of Capsem's home directory (see home.h). */
#include "home.h"

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "macro.h"

int user_home(char **ret)
{
	const char *h = getenv("HOME");
	if (h && h[0] == '/') {
		char *p = strdup(h);
		if (!p)
			return -ENOMEM;
		*ret = p;
		return 0;
	}
	long sz = sysconf(_SC_GETPW_R_SIZE_MAX);
	size_t n = sz > 0 && sz < (1 << 20) ? (size_t)sz : 16384;
	_cleanup_free_ char *b = malloc(n);
	struct passwd pw, *res = NULL;
	if (!b)
		return -ENOMEM;
	if (getpwuid_r(geteuid(), &pw, b, n, &res) != 0 || !res || !res->pw_dir ||
	    res->pw_dir[0] != '/')
		return -ENOENT;
	char *p = strdup(res->pw_dir);
	if (!p)
		return -ENOMEM;
	*ret = p;
	return 0;
}

int capsem_home(char **ret)
{
	const char *h = getenv("CAPSEM_HOME");
	char *p = NULL;
	if (h && *h) {
		if (!(p = strdup(h)))
			return -ENOMEM;
		*ret = p;
		return 0;
	}
	_cleanup_free_ char *u = NULL;
	int r = user_home(&u);
	if (r < 0)
		return r;
	if (asprintf(&p, "%s/.capsem", streq(u, "/") ? "" : u) < 0)
		return -ENOMEM;
	*ret = p;
	return 0;
}

int capsem_images_dir(char **ret)
{
	const char *d = getenv("CAPSEM_IMAGES_DIR");
	char *p = NULL;
	if (d && *d) {
		if (!(p = strdup(d)))
			return -ENOMEM;
		*ret = p;
		return 0;
	}
	_cleanup_free_ char *h = NULL;
	int r = capsem_home(&h);
	if (r < 0)
		return r;
	if (asprintf(&p, "%s/images", h) < 0)
		return -ENOMEM;
	*ret = p;
	return 0;
}

const char *capsem_system_images_dir(void)
{
	const char *d = getenv("CAPSEM_SYSTEM_IMAGES_DIR");
	return d && *d ? d : CAPSEM_DATADIR "/images";
}

/* 1 when DIR/NAME/manifest.json exists */
static int has_manifest(const char *dir, const char *name)
{
	_cleanup_free_ char *m = NULL;
	if (asprintf(&m, "%s/%s/manifest.json", dir, name) < 0)
		return -ENOMEM;
	return access(m, F_OK) == 0;
}

int capsem_image_find(const char *images_dir, const char *name, char **ret)
{
	const char *sys = capsem_system_images_dir();
	int user = has_manifest(images_dir, name), system = 0;
	char *p = NULL;
	if (user < 0)
		return user;
	if (!user) {
		system = has_manifest(sys, name);
		if (system < 0)
			return system;
	}
	if (asprintf(&p, "%s/%s", system ? sys : images_dir, name) < 0)
		return -ENOMEM;
	*ret = p;
	return system;
}
