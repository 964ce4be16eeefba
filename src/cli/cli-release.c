/* cli-release.c - the CLI's side of the release channel, beneath `capsem update`: load and
 * verify the channel's manifest (signature first, then the strict parse), what is installed
 * (the package's version, each image's release.json), downloading an image into a staging
 * directory, and the atomic swaps that install it or roll it back.
 *
 * Layout in the user's images directory:
 *   <name>/                 the image in use (release.json names the channel version it came
 *                           from; an image built here has none and is never replaced)
 *   .<name>.previous/       the image it replaced, for `capsem update --rollback`
 *   .downloads/<sha256>     assets being downloaded (kept across runs for a resume)
 *   .stage-<name>-XXXXXX/   an image being assembled; it becomes <name> in one
 *                           renameat2(RENAME_EXCHANGE) only after every file verified
 * Trust boundary: the manifest is verified with the package's public key before anything is
 * parsed; assets are verified by size and SHA-256 against it, and the staged image against its
 * own manifest.json, before anything is replaced. Main thread of the CLI.
 */
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "clilib.h"
#include "config.h"
#include "fdutil.h"
#include "fetch.h"
#include "home.h"
#include "log.h"
#include "macro.h"
#include "manifest.h"
#include "release.h"
#include "relload.h"

int cli_release_load(const char *url, struct release **ret, char *err, size_t errlen)
{
	if (fetch_init() < 0)
		return snprintf(err, errlen, "cannot initialise libcurl"), -EIO;
	return release_load(url, release_key_path(), ret, err, errlen);
}

char *cli_image_release_version(const char *images, const char *name)
{
	_cleanup_free_ char *p = NULL, *text = NULL;
	json_error_t e;
	if (asprintf(&p, "%s/%s/" CLI_RELEASE_FILE, images, name) < 0 ||
	    read_file_small(p, 4096, &text, NULL) < 0)
		return NULL;
	json_t *j = json_loads(text, 0, &e);
	const char *v = json_string_value(json_object_get(j, "version"));
	char *res = v && release_version_valid(v) ? strdup(v) : NULL;
	json_decref(j);
	return res;
}

static void progress(void *ud, uint64_t done, uint64_t total)
{
	int *last = ud;
	int pct = total ? (int)(done * 100 / total) : 100;
	if (pct / 10 != *last / 10 || pct == 100) {
		fprintf(stderr, "\r  %3d%% of %llu MiB", pct, (unsigned long long)(total >> 20));
		if (pct == 100)
			fputc('\n', stderr);
		*last = pct;
	}
}

int cli_fetch_file(const char *url, const char *path, uint64_t size, const char *sha256, char *err,
		   size_t errlen)
{
	int last = -1;
	log_info("downloading %s", url);
	return fetch_verified(url, path, size, sha256, isatty(STDERR_FILENO) ? progress : NULL,
			      &last, err, errlen);
}

int cli_image_stage(const char *images, const char *base_url, const struct release *rel,
		    const struct release_image *im, char **ret_stage, char *err, size_t errlen)
{
	_cleanup_free_ char *dl = NULL, *stage = NULL, *tmpl = NULL, *info = NULL, *verr = NULL;
	int r;
	if (asprintf(&dl, "%s/.downloads", images) < 0 ||
	    asprintf(&tmpl, "%s/.stage-%s-XXXXXX", images, im->name) < 0)
		return -ENOMEM;
	r = mkdir_p(dl, 0755);
	if (r < 0)
		return snprintf(err, errlen, "%s: %s", dl, strerror(-r)), r;
	if (!mkdtemp(tmpl))
		return r = negative_errno(), snprintf(err, errlen, "%s: %s", tmpl, strerror(-r)), r;
	stage = TAKE_PTR(tmpl);
	(void)chmod(stage, 0755);
	for (size_t i = 0; i < im->n_assets; i++) {
		const struct release_file *a = &im->assets[i];
		_cleanup_free_ char *url = release_resolve_url(base_url, a->url), *part = NULL;
		_cleanup_free_ char *dst = NULL;
		char e2[256];
		if (!url || asprintf(&part, "%s/%s", dl, a->sha256) < 0 ||
		    asprintf(&dst, "%s/%s", stage, a->file) < 0) {
			rm_rf(stage);
			return -ENOMEM;
		}
		r = cli_fetch_file(url, part, a->size, a->sha256, e2, sizeof(e2));
		if (r == 0 && rename(part, dst) < 0)
			r = negative_errno(), snprintf(e2, sizeof(e2), "%s", strerror(-r));
		if (r == 0)
			(void)chmod(dst, 0644);
		if (r < 0) {
			snprintf(err, errlen, "image %s, %s: %s", im->name, a->file, e2);
			rm_rf(stage);
			return r;
		}
	}
	/* the image's own manifest over what was staged: the same check every boot makes */
	r = manifest_verify(stage, &verr);
	if (r < 0) {
		snprintf(err, errlen, "image %s: the staged image does not verify: %s", im->name,
			 verr ? verr : strerror(-r));
		rm_rf(stage);
		return -EBADMSG;
	}
	json_t *j = json_pack("{s:s, s:s?}", "version", rel->version, "channel", rel->channel);
	_cleanup_free_ char *text = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
	json_decref(j);
	if (!text || asprintf(&info, "%s/" CLI_RELEASE_FILE, stage) < 0 ||
	    write_file_atomic(info, text, strlen(text), 0644) < 0) {
		rm_rf(stage);
		return -ENOMEM;
	}
	*ret_stage = TAKE_PTR(stage);
	return 0;
}

/* renameat2(RENAME_EXCHANGE), or a plain rename when b does not exist */
static int swap_dirs(const char *a, const char *b)
{
	if (syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) == 0)
		return 1;
	if (errno != ENOENT)
		return negative_errno();
	return rename(a, b) < 0 ? negative_errno() : 0;
}

int cli_image_commit(const char *images, const char *name, const char *stage)
{
	_cleanup_free_ char *dir = NULL, *prev = NULL;
	if (asprintf(&dir, "%s/%s", images, name) < 0 ||
	    asprintf(&prev, "%s/.%s.previous", images, name) < 0)
		return -ENOMEM;
	int r = swap_dirs(stage, dir);
	if (r < 0)
		return r;
	if (r == 1) {
		/* stage now holds the old image: it becomes the previous one */
		(void)rm_rf(prev);
		if (rename(stage, prev) < 0)
			return negative_errno();
	}
	return 0;
}

int cli_image_rollback(const char *images, const char *name)
{
	_cleanup_free_ char *dir = NULL, *prev = NULL;
	if (asprintf(&dir, "%s/%s", images, name) < 0 ||
	    asprintf(&prev, "%s/.%s.previous", images, name) < 0)
		return -ENOMEM;
	if (access(prev, F_OK) < 0)
		return -ENOENT;
	/* exchanged, so a second rollback goes forward again */
	int r = swap_dirs(prev, dir);
	return r < 0 ? r : 0;
}
