/* rootfsconfig.c - the "image" layer's writes of an image config into the unpacked root tree
 * (rootfs.c runs the layers): seeded files, /etc/environment and /etc/profile.d/capsem.sh, the
 * banner, /etc/gitconfig, /etc/capsem/image.toml (what capsem-doctor expects of the image), the
 * halt/poweroff/reboot links.
 *
 * Trust boundary: the config was validated by imgconfig.c (paths, names, variables); every path
 * is opened component by component under the root without following symlinks. Main thread.
 */
#include "rootfsconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fdutil.h"
#include "macro.h"
#include "strv.h"
#include "util.h"

/* Write data at root/rel (rel: a path checked by imgcfg_seed_path_valid, without the leading
 * '/'), creating directories (0755) on the way; no component may be a symlink. */
int rootfs_tree_write(const char *root, const char *rel, const void *data, size_t len,
		      unsigned mode)
{
	_cleanup_close_ int dfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_free_ char *copy = strdup(rel);
	if (dfd < 0)
		return negative_errno();
	if (!copy)
		return -ENOMEM;
	char *p = copy;
	for (;;) {
		char *sl = strchr(p, '/');
		if (!sl)
			break;
		*sl = 0;
		if (mkdirat(dfd, p, 0755) < 0 && errno != EEXIST)
			return negative_errno();
		int nfd = openat(dfd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (nfd < 0)
			return negative_errno();
		safe_close(dfd);
		dfd = nfd;
		p = sl + 1;
	}
	(void)unlinkat(dfd, p, 0);
	_cleanup_close_ int fd =
		openat(dfd, p, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0)
		return negative_errno();
	int r = fd_write_all(fd, data, len);
	if (r == 0 && fchmod(fd, mode) < 0)
		r = negative_errno();
	return r;
}

int rootfs_tree_write_str(const char *root, const char *rel, const char *s, unsigned mode)
{
	return rootfs_tree_write(root, rel, s, strlen(s), mode);
}

/* Shell single-quoting of s appended to *out. */
static int append_quoted(char **out, const char *s)
{
	size_t n = strlen(*out);
	size_t extra = 2;
	for (const char *p = s; *p; p++)
		extra += *p == '\'' ? 4 : 1;
	char *t = realloc(*out, n + extra + 1);
	if (!t)
		return -ENOMEM;
	*out = t;
	t += n;
	*t++ = '\'';
	for (const char *p = s; *p; p++) {
		if (*p == '\'') {
			memcpy(t, "'\\''", 4);
			t += 4;
		} else
			*t++ = *p;
	}
	*t++ = '\'';
	*t = 0;
	return 0;
}

static int append(char **out, const char *s)
{
	size_t n = strlen(*out), m = strlen(s);
	char *t = realloc(*out, n + m + 1);
	if (!t)
		return -ENOMEM;
	memcpy(t + n, s, m + 1);
	*out = t;
	return 0;
}

/* 1 when the "K=V" strv env sets key. */
static int env_has(char *const *env, const char *key)
{
	size_t l = strlen(key);
	for (size_t i = 0; env && env[i]; i++)
		if (strncmp(env[i], key, l) == 0 && env[i][l] == '=')
			return 1;
	return 0;
}

/* /etc/environment ("K=V" lines, as pam_env and the capsem agent read it) and
 * /etc/profile.d/capsem.sh (exports + the banner for interactive shells). */
int rootfs_write_environment(const struct imgcfg *cfg, const char *root)
{
	_cleanup_free_ char *envf = strdup(""), *prof = NULL;
	_cleanup_strv_free_ char **all = NULL;
	int r = 0;
	if (!envf)
		return -ENOMEM;
	prof = strdup("# Capsem sandbox VM: the image config's environment "
		      "(written by capsem-builder)\n");
	if (!prof)
		return -ENOMEM;
	/* the venv is active everywhere: a login shell's /etc/profile resets PATH, then
	 * profile.d/capsem.sh sets it again */
	if (cfg->venv && !env_has(cfg->env, "VIRTUAL_ENV"))
		r |= strv_pushf(&all, "VIRTUAL_ENV=%s", cfg->venv);
	if (cfg->venv && !env_has(cfg->env, "PATH"))
		r |= strv_pushf(&all, "PATH=%s/bin:" ROOTFS_PATH, cfg->venv);
	for (size_t i = 0; cfg->env && cfg->env[i]; i++)
		r |= strv_push(&all, cfg->env[i]);
	for (size_t i = 0; i < cfg->n_providers; i++)
		for (size_t j = 0;
		     cfg->providers[i].enabled && cfg->providers[i].env && cfg->providers[i].env[j];
		     j++)
			r |= strv_push(&all, cfg->providers[i].env[j]);
	r |= strv_push(&all, "CAPSEM_SANDBOX=1");
	if (r < 0)
		return -ENOMEM;
	for (size_t i = 0; all[i]; i++) {
		const char *eq = strchr(all[i], '=');
		_cleanup_free_ char *k = strndup(all[i], (size_t)(eq - all[i]));
		if (!k || append(&envf, all[i]) < 0 || append(&envf, "\n") < 0 ||
		    append(&prof, "export ") < 0 || append(&prof, k) < 0 ||
		    append(&prof, "=") < 0 || append_quoted(&prof, eq + 1) < 0 ||
		    append(&prof, "\n") < 0)
			return -ENOMEM;
	}
	if (append(&prof, "case $- in *i*)\n"
			  "\tif [ -z \"${CAPSEM_BANNER_SHOWN:-}\" ] && [ -r /etc/capsem/banner ]; "
			  "then\n"
			  "\t\tcat /etc/capsem/banner; export CAPSEM_BANNER_SHOWN=1\n"
			  "\tfi ;;\n"
			  "esac\n") < 0)
		return -ENOMEM;
	r = rootfs_tree_write_str(root, "etc/environment", envf, 0644);
	if (r == 0)
		r = rootfs_tree_write_str(root, "etc/profile.d/capsem.sh", prof, 0644);
	if (r == 0 && cfg->banner)
		r = rootfs_tree_write_str(root, "etc/capsem/banner", cfg->banner, 0644);
	if (r < 0)
		return r;
	/* interactive non-login bash shells read /etc/bash.bashrc, not /etc/profile.d */
	_cleanup_free_ char *bashrc = NULL, *text = NULL;
	size_t len = 0;
	if (asprintf(&bashrc, "%s/etc/bash.bashrc", root) < 0)
		return -ENOMEM;
	if (util_read_file(bashrc, 1u << 20, &text, &len) == 0 &&
	    !strstr(text, "/etc/profile.d/capsem.sh")) {
		if (append(&text, "\n# Capsem sandbox VM\n[ -r /etc/profile.d/capsem.sh ] && . "
				  "/etc/profile.d/capsem.sh\n") < 0)
			return -ENOMEM;
		r = rootfs_tree_write_str(root, "etc/bash.bashrc", text, 0644);
	}
	return r;
}

/* /etc/gitconfig: git over HTTPS to github.com answers its credential request with
 * x-access-token and $GH_TOKEN, the placeholder the guest gets when the host has a GitHub token
 * (the proxy swaps the real token into the Basic credentials, docs/POLICY.md); without
 * GH_TOKEN the helper says nothing and git goes on as usual. Shell text run by git, fixed. */
static const char gitconfig[] =
	"# written by capsem-builder: git to GitHub over HTTPS sends the GH_TOKEN placeholder,\n"
	"# which the host's egress proxy swaps for the real token (docs/POLICY.md, Credentials)\n"
	"[credential \"https://github.com\"]\n"
	"\thelper = \"!f() { cat >/dev/null; test \\\"$1\\\" = get && "
	"test -n \\\"$GH_TOKEN\\\" || exit 0; echo username=x-access-token; "
	"echo \\\"password=$GH_TOKEN\\\"; }; f\"\n";

/* /etc/capsem/image.toml: what capsem-doctor expects in this image. */
static int append_list(char **t, const char *key, char *const *v)
{
	int r = append(t, key);
	r |= append(t, " = [");
	for (size_t i = 0; v && v[i]; i++) {
		r |= append(t, i ? ", " : "");
		r |= append_quoted(t, v[i]);
	}
	return r | append(t, "]\n");
}

/* 1 when the config installs the Debian package name. */
static int has_apt(const struct imgcfg *cfg, const char *name)
{
	for (size_t j = 0; cfg->apt && cfg->apt[j]; j++)
		if (streq(cfg->apt[j], name))
			return 1;
	return 0;
}

int rootfs_write_doctor_toml(const struct imgcfg *cfg, const char *root, json_t *clis)
{
	_cleanup_free_ char *t = strdup("# written by capsem-builder; read by capsem-doctor\n");
	_cleanup_strv_free_ char **tools = NULL, **sys = NULL;
	static const char *const maybe[][2] = {
		{ "python3", "python3" }, { "python3-pip", "pip" }, { "git", "git" },
		{ "curl", "curl" },	  { "mount", "mount" },	    { "mount", "umount" },
		{ "mount", "swapon" },	  { "vim", "vim" },
	};
	if (!t)
		return -ENOMEM;
	int r = strv_push(&tools, "node") | strv_push(&tools, "npm");
	/* capsem-guest's own halt/poweroff/reboot (make_power_links) */
	r |= strv_push(&sys, "halt") | strv_push(&sys, "poweroff") | strv_push(&sys, "reboot");
	for (size_t i = 0; i < ELEMENTSOF(maybe); i++)
		if (has_apt(cfg, maybe[i][0]))
			r |= strv_push(i < 4 ? &tools : &sys, maybe[i][1]);
	r |= append(&t, "name = ");
	r |= append_quoted(&t, cfg->name);
	r |= append(&t, "\n");
	r |= append_list(&t, "tools", tools);
	r |= append_list(&t, "system_tools", sys);
	if (cfg->venv) {
		r |= append(&t, "venv = ");
		r |= append_quoted(&t, cfg->venv);
		r |= append(&t, "\n");
	}
	for (size_t i = 0; i < cfg->n_providers; i++) {
		const struct imgcfg_provider *p = &cfg->providers[i];
		const char *v = json_string_value(json_object_get(clis, p->cli));
		_cleanup_strv_free_ char **files = NULL;
		if (!p->enabled)
			continue;
		for (size_t j = 0; j < p->n_files; j++)
			r |= strv_push(&files, p->files[j].path);
		r |= append(&t, "\n[[providers]]\nname = ");
		r |= append_quoted(&t, p->name);
		r |= append(&t, "\ncli = ");
		r |= append_quoted(&t, p->cli);
		r |= append(&t, "\nversion = ");
		r |= append_quoted(&t, v ? v : "");
		if (p->api_key_env) {
			r |= append(&t, "\napi_key_env = ");
			r |= append_quoted(&t, p->api_key_env);
		}
		r |= append(&t, "\n");
		r |= append_list(&t, "domains", p->domains);
		r |= append_list(&t, "files", files);
	}
	if (r < 0)
		return -ENOMEM;
	/* single-quoted TOML literals: the names were checked to hold no quote */
	for (char *p = t; *p; p++)
		if (*p == '\\')
			return -EINVAL;
	return rootfs_tree_write_str(root, "etc/capsem/image.toml", t, 0644);
}

/* /usr/local/sbin/{halt,poweroff,reboot} -> /proc/1/exe: capsem-guest asks PID 1 (main.c) */
int rootfs_make_power_links(const char *root)
{
	_cleanup_free_ char *dir = NULL;
	if (asprintf(&dir, "%s/usr/local/sbin", root) < 0)
		return -ENOMEM;
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return negative_errno();
	for (const char *const *n = (const char *const[]){ "halt", "poweroff", "reboot", NULL }; *n;
	     n++) {
		_cleanup_free_ char *link = NULL;
		if (asprintf(&link, "%s/usr/local/sbin/%s", root, *n) < 0)
			return -ENOMEM;
		(void)unlink(link);
		if (symlink("/proc/1/exe", link) < 0)
			return negative_errno();
	}
	return 0;
}

int rootfs_write_gitconfig(const char *root)
{
	return rootfs_tree_write_str(root, "etc/gitconfig", gitconfig, 0644);
}
