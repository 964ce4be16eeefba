/* fork.c - POST /vms/{ref}/fork: a VM's changes become a fork image (docs/API.md "Fork").
 *
 * A fork image names its base (the image the VM was made from, or that image's own base: the
 * genealogy stays flat) and holds a copy of the VM's disk (the overlay's upper directory with
 * every system change, and /root) as a sparse template, plus an archive of the VM's own workspace
 * (never a user's folder shared with --workspace: that one stays where it is). A VM created
 * from the image starts with a copy of the template (vmsup.c) and its workspace unpacked.
 *
 * A named VM's changes are on its disk. Running, it is synced first (`sync` in the guest,
 * through the exec protocol): the copy is then what a crash at that moment would leave, which
 * ext4's journal makes consistent; a writer still busy during the copy may lose its last writes
 * in the fork, never the VM. A stopped VM is copied as it is.
 *
 * An ephemeral VM keeps its changes in guest memory (the overlay's upper directory on a tmpfs,
 * /root included). The guest streams that directory out as a tar archive (GNU tar in the image,
 * with the overlay's xattrs) over an exec, written to a file by a worker thread; the host
 * unpacks it (as root, into a 0700 directory: owners, modes and the overlay's whiteouts are part
 * of it) into the layout of a VM disk (overlay/upper, with /root moved to root/) and makes the
 * template with `mkfs.ext4 -d`. GNU tar refuses absolute and ".." names and defers symlinks, so
 * the archive cannot write outside that directory.
 *
 * Trust boundary: API clients (image name and description validated); the disk and the
 * workspace are the guest's bytes, copied as opaque data (the disk) or archived by GNU tar
 * without following symlinks (the workspace). Thread: the loop; the copy, the archive and the
 * hashes run on libuv's worker pool.
 */
#include "fork.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clockutil.h"
#include "dconfine.h"
#include "fdutil.h"
#include "gexec.h"
#include "home.h"
#include "images.h"
#include "jsonutil.h"
#include "log.h"
#include "macro.h"
#include "manifest.h"
#include "proto.h"
#include "strv.h"
#include "unixsock.h"
#include "vmspec.h"

#define FORK_DESC_MAX 256

struct forkjob {
	uv_work_t w;
	struct api *a;
	struct httpd_conn *c;
	char *images_dir, *image, *description, *parent;
	char *src_image_dir, *disk, *workspace; /* workspace: the VM's own, NULL for a user's */
	char *vsock;				/* ephemeral: the VM's exec socket */
	uint64_t disk_mib;
	int synced;
	int pushed; /* j->image is on forking */
	int r;
	char *error;
	json_t *result;
	uint64_t t0_ns;
};

static char **forking; /* names of fork images being made: one at a time per name */

static int forking_has(const char *name)
{
	for (size_t i = 0; forking && forking[i]; i++)
		if (streq(forking[i], name))
			return 1;
	return 0;
}

static void forking_drop(const char *name)
{
	size_t n = strv_length(forking);
	for (size_t i = 0; name && i < n; i++)
		if (streq(forking[i], name)) {
			free(forking[i]);
			forking[i] = forking[n - 1];
			forking[n - 1] = NULL;
			return;
		}
}

static void job_free(struct forkjob *j)
{
	if (!j)
		return;
	if (j->pushed)
		forking_drop(j->image);
	free(j->images_dir);
	free(j->image);
	free(j->description);
	free(j->parent);
	free(j->src_image_dir);
	free(j->disk);
	free(j->workspace);
	free(j->vsock);
	free(j->error);
	json_decref(j->result);
	free(j);
}

static int fail(struct forkjob *j, int r, const char *fmt, ...) _printf_(3, 4);
static int fail(struct forkjob *j, int r, const char *fmt, ...)
{
	va_list ap;
	free(j->error);
	va_start(ap, fmt);
	if (vasprintf(&j->error, fmt, ap) < 0)
		j->error = NULL;
	va_end(ap);
	return r;
}

static char *join(const char *a, const char *b)
{
	char *p = NULL;
	return asprintf(&p, "%s/%s", a, b) < 0 ? NULL : p;
}

/* A confined tar -cf dst of the directory src (the workspace, which the guest writes):
 * names relative to it, symlinks stored as symlinks, numeric owners; it reads only src and
 * writes only dst (dconfine.h), so nothing the guest plants takes it outside. 0 or -errno,
 * with j->error saying why when tar failed. */
static int archive_dir(struct forkjob *j, const char *src, const char *dst)
{
	_cleanup_free_ char *tar = NULL;
	int r = dconfine_find_tar(&tar);
	if (r < 0)
		return fail(j, r, "cannot archive the VM's workspace: no tar on the host (%s)",
			    strerror(-r));
	/* made here for the ruleset to bind to; 0600: the workspace is the user's */
	_cleanup_close_ int fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return negative_errno();
	char *argv[] = { tar,		"--numeric-owner",
			 "--sort=name", "--exclude=./.capsem-seeded",
			 "-C",		(char *)src,
			 "-cf",		(char *)dst,
			 ".",		NULL };
	char why[512];
	r = dconfine_run(DCONFINE_TAR, argv, dst, src, why, sizeof(why));
	/* 1: "some files differ" (changed while read): the archive is still whole */
	if (r == 0 || r == 1)
		return 0;
	return fail(j, r > 0 ? -EIO : r, "cannot archive the VM's workspace %s (tar): %s", src,
		    *why ? why : strerror(-r));
}

/* Run argv in the guest (blocking, on a worker thread) with stdin closed, its stdout written to
 * out_fd; stderr's first bytes go into err. The exit code (>= 0), or -errno. */
static int guest_exec_to_fd(const char *vsock, char **argv, int out_fd, char *err, size_t errlen)
{
	_cleanup_buf_ struct buf b = BUF_INIT(PROTO_HDR_SIZE + PROTO_MAX_PAYLOAD);
	struct proto_exec ex = { .argc = (uint32_t)strv_length(argv), .argv = argv };
	size_t elen = 0;
	err[0] = 0;
	int r = proto_exec_encode(&ex, &b);
	if (r == 0)
		r = proto_frame_append(&b, PROTO_STDIN, NULL, 0);
	if (r < 0)
		return r;
	_cleanup_close_ int fd = hvsock_connect(vsock, PROTO_PORT_EXEC, "api", 10000);
	if (fd < 0)
		return fd;
	r = fd_write_all(fd, buf_head(&b), buf_len(&b));
	buf_consume(&b, buf_len(&b));
	while (r == 0) {
		uint16_t type;
		const uint8_t *pl;
		uint32_t len;
		ssize_t k = proto_frame_parse(buf_head(&b), buf_len(&b), &type, &pl, &len);
		if (k < 0)
			return (int)k;
		if (k == 0) {
			uint8_t *w = buf_reserve(&b, 65536);
			if (!w)
				return -EMSGSIZE;
			ssize_t n = fd_read_some(fd, w, 65536);
			if (n <= 0)
				return n < 0 ? (int)n : -ECONNRESET;
			buf_commit(&b, (size_t)n);
			continue;
		}
		switch (type) {
		case PROTO_STDOUT:
			r = fd_write_all(out_fd, pl, len);
			break;
		case PROTO_STDERR:
			if (elen + 1 < errlen) {
				size_t t = MIN((size_t)len, errlen - 1 - elen);
				memcpy(err + elen, pl, t);
				elen += t;
				err[elen] = 0;
			}
			break;
		case PROTO_EXIT: {
			struct proto_exit e;
			if (proto_exit_decode(pl, len, &e) < 0)
				return -EBADMSG;
			return e.kind == PROTO_EXIT_CODE ? (int)e.code : 128 + (int)e.code;
		}
		case PROTO_ERROR: {
			struct proto_error e;
			if (proto_error_decode(pl, len, &e) == 0)
				snprintf(err, errlen, "%s", e.message);
			return -EREMOTEIO;
		}
		default:
			break;
		}
		buf_consume(&b, (size_t)k);
	}
	return r;
}

/* An ephemeral VM's overlay, streamed out by the guest, made into a disk template at disk. */
static int disk_from_guest(struct forkjob *j, const char *tmp, const char *disk)
{
	_cleanup_free_ char *arch = NULL, *tree = NULL, *upper = NULL, *root = NULL, *proot = NULL,
			    *tar = NULL, *mkfs = NULL;
	char err[1024];
	if (asprintf(&arch, "%s/upper.tar", tmp) < 0 || asprintf(&tree, "%s/tree", tmp) < 0 ||
	    asprintf(&upper, "%s/overlay/upper", tree) < 0 ||
	    asprintf(&root, "%s/root", tree) < 0 || asprintf(&proot, "%s/root", upper) < 0)
		return -ENOMEM;
	int r = dconfine_find_tar(&tar);
	if (r == 0)
		r = dconfine_find_mkfs(&mkfs);
	if (r < 0)
		return fail(j, r, "fork needs tar and mkfs.ext4 on the host (%s)", strerror(-r));
	_cleanup_close_ int out = open(arch, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0)
		return negative_errno();
	char *gargv[] = { "tar",      "--numeric-owner",
			  "--xattrs", "--xattrs-include=trusted.overlay.*",
			  "-C",	      "/mnt/capsem-overlay/upper",
			  "-cf",      "-",
			  ".",	      NULL };
	r = guest_exec_to_fd(j->vsock, gargv, out, err, sizeof(err));
	if (r != 0 && r != 1) /* 1: a file changed while read */
		return fail(j, r < 0 ? r : -EIO, "the guest could not stream its changes (tar: %s)",
			    r < 0 ? strerror(-r) : err);
	if (mkdir_p(upper, 0755) < 0 || mkdir_p(root, 0700) < 0)
		return negative_errno();
	char *xargv[] = { tar,
			  "--numeric-owner",
			  "--same-owner",
			  "--same-permissions",
			  "--xattrs",
			  "--xattrs-include=trusted.overlay.*",
			  "-C",
			  upper,
			  "-xf",
			  arch,
			  NULL };
	/* confined: it reads the archive and writes only beneath upper */
	char why[512];
	r = dconfine_run(DCONFINE_TAR, xargv, upper, arch, why, sizeof(why));
	if (r != 0)
		return fail(j, r > 0 ? -EIO : r, "cannot unpack the guest's changes (tar: %s)",
			    *why ? why : strerror(-r));
	(void)unlink(arch);
	/* /root is the disk's root/ in a VM with a disk: it moves out of the overlay */
	struct stat st;
	if (lstat(proot, &st) == 0 && S_ISDIR(st.st_mode) &&
	    (rmdir(root) < 0 || rename(proot, root) < 0))
		return negative_errno();
	char size[32];
	snprintf(size, sizeof(size), "%lluM", (unsigned long long)j->disk_mib);
	char *margv[] = { mkfs,		 "-q", "-F", "-m",	   "0",	 "-L",
			  "capsem-root", "-d", tree, (char *)disk, size, NULL };
	/* confined (dconfine.h): it reads the tree and writes only the disk, made here first
	 * for its Landlock rule to bind to */
	_cleanup_close_ int dfd = open(disk, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (dfd < 0)
		return negative_errno();
	r = dconfine_run(DCONFINE_MKFS, margv, disk, tree, why, sizeof(why));
	if (r != 0)
		return fail(j, r > 0 ? -EIO : r, "mkfs.ext4 -d could not make the disk (%s)",
			    *why ? why : strerror(-r));
	return rm_rf(tree);
}

static int copy_file(const char *src, const char *dst)
{
	_cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (in < 0)
		return negative_errno();
	/* 0600: the disk holds the VM's /root (logins, keys) */
	_cleanup_close_ int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0)
		return negative_errno();
	int r = copy_sparse(in, out);
	if (r == 0 && fsync(out) < 0)
		r = negative_errno();
	return r;
}

static int do_fork(struct forkjob *j, const char *tmp)
{
	_cleanup_manifest_ struct manifest *src = NULL;
	_cleanup_free_ char *disk = NULL, *ws = NULL, *bman = NULL, *final = NULL;
	struct manifest f = { 0 };
	int r = manifest_load(j->src_image_dir, &src);
	if (r < 0)
		return fail(j, r, "cannot read the VM's image %s: %s", j->src_image_dir,
			    strerror(-r));
	/* flat: a fork of a fork names the first fork's base */
	const char *slash = strrchr(j->src_image_dir, '/');
	f.base = src->base ? src->base : (char *)(slash ? slash + 1 : j->src_image_dir);
	if (asprintf(&bman, "%s/" MANIFEST_FILENAME, src->base ? src->base_dir : j->src_image_dir) <
	    0)
		return -ENOMEM;
	r = sha256_hex_file(bman, f.base_sha256, NULL);
	if (r < 0)
		return fail(j, r, "cannot hash %s: %s", bman, strerror(-r));
	if (asprintf(&disk, "%s/disk.img", tmp) < 0)
		return -ENOMEM;
	if (j->vsock) {
		if (!src->rootfs.file)
			return fail(j, -EOPNOTSUPP,
				    "the image '%s' has no root file system: an ephemeral VM of it "
				    "has no changes to fork but its own workspace",
				    f.base);
		r = disk_from_guest(j, tmp, disk);
		if (r < 0)
			return r;
	} else {
		r = copy_file(j->disk, disk);
		if (r < 0)
			return fail(j, r, "cannot copy the VM's disk %s: %s", j->disk,
				    strerror(-r));
	}
	(void)chmod(disk, 0600);
	r = manifest_asset_from_sparse_file(&f.disk, tmp, "disk.img");
	if (r == 0 && j->workspace && access(j->workspace, F_OK) == 0) {
		if (asprintf(&ws, "%s/workspace.tar", tmp) < 0)
			r = -ENOMEM;
		else if ((r = archive_dir(j, j->workspace, ws)) == 0)
			r = manifest_asset_from_file(&f.workspace, tmp, "workspace.tar", NULL);
	}
	if (r == 0) {
		f.name = j->image;
		f.arch = src->arch;
		f.parent_vm = j->parent;
		f.description = j->description;
		r = manifest_write(tmp, &f);
	}
	if (r == 0) {
		if (asprintf(&final, "%s/%s", j->images_dir, j->image) < 0)
			r = -ENOMEM;
		else if (rename(tmp, final) < 0)
			r = errno == EEXIST || errno == ENOTEMPTY
				    ? fail(j, -EEXIST, "an image named '%s' exists", j->image)
				    : negative_errno();
	}
	if (r == 0) {
		struct stat st;
		uint64_t used = stat(disk, &st) == 0 ? (uint64_t)st.st_blocks * 512 : 0;
		if (final) {
			free(disk);
			disk = NULL;
			if (asprintf(&disk, "%s/disk.img", final) >= 0 && stat(disk, &st) == 0)
				used = (uint64_t)st.st_blocks * 512;
		}
		j->result = json_pack("{s:s, s:s, s:s, s:s?, s:s?, s:I, s:I, s:b, s:f}", "image",
				      j->image, "dir", final, "base", f.base, "parent_vm",
				      j->parent, "description", j->description, "disk_size",
				      (json_int_t)f.disk.size, "disk_used", (json_int_t)used,
				      "workspace", f.workspace.file != NULL, "elapsed_ms",
				      (double)(clock_ns(CLOCK_MONOTONIC) - j->t0_ns) / 1e6);
		if (!j->result)
			r = -ENOMEM;
	}
	manifest_asset_done(&f.disk);
	manifest_asset_done(&f.workspace);
	return r;
}

static void fork_work(uv_work_t *w)
{
	struct forkjob *j = w->data;
	_cleanup_free_ char *tmp = NULL;
	if (asprintf(&tmp, "%s/.fork-%s-XXXXXX", j->images_dir, j->image) < 0) {
		j->r = -ENOMEM;
		return;
	}
	if (mkdir_p(j->images_dir, 0755) < 0 || !mkdtemp(tmp)) {
		j->r = fail(j, negative_errno(), "cannot make a directory in %s: %s", j->images_dir,
			    strerror(errno));
		return;
	}
	(void)chmod(tmp, 0700); /* the VM's /root is in there */
	j->r = do_fork(j, tmp);
	if (j->r < 0)
		(void)rm_rf(tmp);
}

static void fork_done(uv_work_t *w, int status)
{
	struct forkjob *j = w->data;
	if (status < 0 && j->r == 0)
		j->r = -ECANCELED;
	if (j->r == 0) {
		log_info("fork image %s made in %.0f ms", j->image,
			 json_real_value(json_object_get(j->result, "elapsed_ms")));
		httpd_reply_json(j->c, 201, TAKE_PTR(j->result));
	} else if (j->r == -EEXIST) {
		httpd_reply_error(j->c, 409, "name_taken", "an image named '%s' exists", j->image);
	} else {
		httpd_reply_error(j->c, 500, "fork_failed", "%s",
				  j->error ? j->error : strerror(-j->r));
	}
	job_free(j);
}

static void start_work(struct forkjob *j)
{
	j->w.data = j;
	int r = uv_queue_work(j->a->loop, &j->w, fork_work, fork_done);
	if (r < 0) {
		httpd_reply_error(j->c, 500, "internal", "%s", uv_strerror(r));
		job_free(j);
	}
}

/* The guest synced: copy now. */
static void on_synced(struct gexec_result *res, void *ud)
{
	struct forkjob *j = ud;
	if (!res->ok || res->exit.kind != PROTO_EXIT_CODE || res->exit.code != 0) {
		httpd_reply_error(j->c, 503, "vm_failed", "cannot sync the guest's disk: %s",
				  res->error ? res->error : "sync failed");
		job_free(j);
		return;
	}
	j->synced = 1;
	start_work(j);
}

void fork_route(struct api *a, struct httpd_conn *c, struct vm *vm, const struct buf *body)
{
	const struct vm_record *rec = vm_record(vm);
	_cleanup_json_ json_t *in = api_body_json(c, body);
	if (!in)
		return; /* answered */
	const char *image = json_string_value(json_object_get(in, "image"));
	json_t *desc = json_object_get(in, "description");
	if (!json_is_object(in) || !image) {
		httpd_reply_error(c, 400, "bad_request", "expected {\"image\": NAME}");
		return;
	}
	const char *k;
	json_t *v;
	json_object_foreach(in, k, v) if (!streq(k, "image") && !streq(k, "description"))
	{
		httpd_reply_error(c, 400, "bad_request", "unknown member '%s'", k);
		return;
	}
	if (!manifest_image_name_valid(image)) {
		httpd_reply_error(c, 400, "bad_request",
				  "image: a name of lowercase letters, digits, '_', '.', '-' (at "
				  "most %d), starting with a letter or digit",
				  MANIFEST_IMAGE_NAME_MAX);
		return;
	}
	const char *d = desc ? json_string_value(desc) : NULL;
	if (desc &&
	    (!d || strlen(d) > FORK_DESC_MAX || !*d ||
	     strcspn(d, "\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10"
			"\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x7f") !=
		     strlen(d))) {
		httpd_reply_error(c, 400, "bad_request",
				  "description: one line of text, at most %d bytes", FORK_DESC_MAX);
		return;
	}
	const char *images_dir = vmctl_images_dir(a->vms);
	_cleanup_free_ char *dir = NULL;
	if (asprintf(&dir, "%s/%s", images_dir, image) < 0) {
		httpd_reply_error(c, 500, "internal", "out of memory");
		return;
	}
	if (access(dir, F_OK) == 0 || forking_has(image)) {
		httpd_reply_error(c, 409, "name_taken", "an image named '%s' exists", image);
		return;
	}
	if (!rec->persistent && !vm_has_disk(vm) && rec->state != VM_RUNNING) {
		httpd_reply_error(c, 409, "busy", "the ephemeral VM is %s: fork it while it runs",
				  registry_state_name(rec->state));
		return;
	}
	if (!rec->persistent && !vm_has_disk(vm) && geteuid() != 0) {
		httpd_reply_error(
			c, 409, "not_supported",
			"forking an ephemeral VM (its changes are in guest memory) needs a "
			"daemon running as root, to keep owners and overlay whiteouts; fork "
			"a named VM instead (capsem create -n NAME)");
		return;
	}
	if (rec->state != VM_RUNNING && rec->state != VM_STOPPED && rec->state != VM_CRASHED) {
		httpd_reply_error(c, 409, "busy",
				  "the VM is %s: fork it when it runs or is stopped",
				  registry_state_name(rec->state));
		return;
	}
	struct forkjob *j = calloc(1, sizeof(*j));
	if (!j) {
		httpd_reply_error(c, 500, "internal", "out of memory");
		return;
	}
	j->a = a;
	j->c = c;
	j->t0_ns = clock_ns(CLOCK_MONOTONIC);
	j->images_dir = strdup(images_dir);
	j->image = strdup(image);
	j->description = d ? strdup(d) : NULL;
	if (asprintf(&j->parent, "%s (%s)", rec->spec.name ? rec->spec.name : "-", rec->id) < 0)
		j->parent = NULL;
	if (capsem_image_find(images_dir, rec->spec.image, &j->src_image_dir) < 0)
		j->src_image_dir = NULL;
	j->disk = join(rec->vmdir, "disk.img");
	if (!rec->spec.workspace)
		j->workspace = join(rec->vmdir, VMSPEC_WORKSPACE_DIR);
	j->disk_mib = rec->spec.disk_mib ? rec->spec.disk_mib : VMSPEC_DEFAULT_DISK_MIB;
	int ephemeral = !rec->persistent && !vm_has_disk(vm);
	if (ephemeral && !(j->vsock = strdup(vm_vsock_path(vm)))) {
		httpd_reply_error(c, 500, "internal", "out of memory");
		job_free(j);
		return;
	}
	if (!j->images_dir || !j->image || (d && !j->description) || !j->parent ||
	    !j->src_image_dir || !j->disk || (!rec->spec.workspace && !j->workspace) ||
	    strv_push(&forking, image) < 0) {
		httpd_reply_error(c, 500, "internal", "out of memory");
		job_free(j);
		return;
	}
	j->pushed = 1;
	if (rec->state != VM_RUNNING || ephemeral) { /* (a tmpfs needs no sync) */
		start_work(j);
		return;
	}
	_cleanup_buf_ struct buf frame = BUF_INIT(PROTO_HDR_SIZE + PROTO_MAX_PAYLOAD);
	_cleanup_buf_ struct buf none = BUF_INIT(0);
	char *argv[] = { "sync", NULL };
	struct proto_exec ex = { .argc = 1, .argv = argv };
	int r = proto_exec_encode(&ex, &frame);
	if (r == 0)
		r = gexec_run(a->loop, vm_vsock_path(vm), &frame, &none, 4096, on_synced, j);
	if (r < 0) {
		httpd_reply_error(c, 503, "vm_failed", "cannot reach the guest to sync it: %s",
				  strerror(-r));
		job_free(j);
	}
}
