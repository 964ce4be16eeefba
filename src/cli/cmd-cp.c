/* cmd-cp.c - "capsem cp": copy one file between the host and a VM through capsemd
 * (PUT/GET /vms/{ref}/files, docs/API.md).
 *
 * Trust boundary: the local side is the user's; the bytes coming back from the VM are the
 * guest's and are written only to the destination the user named (capped at 256 MiB, a partial
 * file is removed on failure). Main thread of the CLI; the file is streamed, never held whole.
 */
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <sys/stat.h>

#include "clilib.h"
#include "commands.h"
#include "cliutil.h"
#include "log.h"
#include "macro.h"

static void cp_help(void)
{
	printf("Usage: capsem cp SRC DST\n"
	       "\n"
	       "Copy one file between the host and a VM; one side is VM:/absolute/path.\n"
	       "  capsem cp ./notes.txt web:/root/       into /root/ with the same name\n"
	       "  capsem cp ./notes.txt web:/root/n.txt  to that path\n"
	       "  capsem cp web:/root/out.log .          into the current directory\n"
	       "  capsem cp web:/root/out.log -          to stdout\n");
}

static int cp_to_vm(const char *local, const char *ref, const char *gpath)
{
	_cleanup_close_ int fd = open(local, O_RDONLY | O_CLOEXEC);
	_cleanup_free_ char *target = NULL, *q = NULL, *suffix = NULL, *path = NULL;
	struct stat st;
	if (fd < 0)
		return log_error_errno(negative_errno(), "%s", local);
	if (fstat(fd, &st) < 0)
		return log_error_errno(negative_errno(), "%s", local);
	if (!S_ISREG(st.st_mode))
		return log_error("%s: not a regular file (cp copies one file)", local), -EINVAL;
	if ((uint64_t)st.st_size > API_MAX_FILE_BODY)
		return log_error("%s: over the 256 MiB limit of one copy", local), -EFBIG;
	target = cli_cp_target(gpath, local);
	if (!target)
		return log_error("cp: cannot name the destination in %s after '%s'", gpath, local),
		       -EINVAL;
	q = api_escape(target);
	if (!q || asprintf(&suffix, "/files?path=%s&mode=%04o", q, st.st_mode & 07777) < 0 ||
	    !(path = api_vm_path(ref, suffix)))
		return log_oom();
	struct api_req rq = { .method = "PUT",
			      .path = path,
			      .content_type = "application/octet-stream",
			      .body_len = (size_t)st.st_size,
			      .body_fd = fd,
			      .out_fd = -1 };
	struct api_response res;
	int r = cli_api_req(&rq, &res);
	if (r < 0)
		return r;
	api_response_done(&res);
	return 0;
}

static int cp_from_vm(const char *ref, const char *gpath, const char *local)
{
	_cleanup_free_ char *target = NULL, *q = NULL, *suffix = NULL, *path = NULL;
	struct stat st;
	int to_stdout = streq(local, "-");
	if (!to_stdout) {
		if (stat(local, &st) == 0 && S_ISDIR(st.st_mode)) {
			_cleanup_free_ char *dir = NULL;
			if (asprintf(&dir, "%s/", local) < 0)
				return log_oom();
			target = cli_cp_target(dir, gpath);
		} else {
			target = cli_cp_target(local, gpath);
		}
		if (!target)
			return log_error("cp: cannot name the destination in %s after '%s'", local,
					 gpath),
			       -EINVAL;
	}
	q = api_escape(gpath);
	if (!q || asprintf(&suffix, "/files?path=%s", q) < 0 || !(path = api_vm_path(ref, suffix)))
		return log_oom();
	_cleanup_close_ int fd = -1;
	if (!to_stdout) {
		fd = open(target, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
		if (fd < 0)
			return log_error_errno(negative_errno(), "%s", target);
	}
	struct api_req rq = { .method = "GET",
			      .path = path,
			      .body_fd = -1,
			      .out_fd = to_stdout ? STDOUT_FILENO : fd };
	struct api_response res;
	int r = cli_api_req(&rq, &res);
	if (r < 0) {
		if (!to_stdout)
			unlink(target);
		return r;
	}
	api_response_done(&res);
	return 0;
}

int cmd_cp(int argc, char **argv)
{
	static const struct option opts[] = { { "help", no_argument, NULL, 'h' }, {} };
	_cleanup_free_ char *sref = NULL, *spath = NULL, *dref = NULL, *dpath = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) >= 0) {
		if (c == 'h') {
			cp_help();
			return 0;
		}
		return CLI_EXIT_USAGE;
	}
	if (argc - optind != 2)
		return log_error("cp: expects SRC and DST (see 'capsem cp --help')"),
		       CLI_EXIT_USAGE;
	int s = cli_parse_cp_path(argv[optind], &sref, &spath);
	int d = cli_parse_cp_path(argv[optind + 1], &dref, &dpath);
	if (s < 0 || d < 0)
		return log_error("cp: a VM path must be absolute: VM:/path"), CLI_EXIT_USAGE;
	if (s == d)
		return log_error(s ? "cp: copying between two VMs is not supported"
				   : "cp: one side must be a VM path (VM:/path)"),
		       CLI_EXIT_USAGE;
	int r = d ? cp_to_vm(argv[optind], dref, dpath) : cp_from_vm(sref, spath, argv[optind + 1]);
	return r < 0 ? 1 : 0;
}
