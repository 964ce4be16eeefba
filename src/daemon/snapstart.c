/* snapstart.c - starts restored from a saved, booted VM instead of a cold boot (issue
 * "fork/suspend" item 3; docs/ARCHITECTURE.md "Snapshot starts").
 *
 * A saved state belongs to one kind of VM: the image (its manifest's SHA-256, so a rebuilt image
 * or kernel makes a new one), CPUs, memory and disk size, with the devices of a suspendable VM
 * (the serial channel, the workspace's port). It lives in <home>/cache/snapstart/<kind>/: ram (the guest
 * RAM file), suspend.state (the devices, ~130 KiB), suspend.json, disk.img (the disk as the boot
 * left it). It is made once, by a template VM: capsem-vm boots cold into a temporary directory
 * with its RAM in a file, and is suspended as soon as its agent says hello; the directory is then
 * renamed into place (a concurrent maker's loses the rename and is removed).
 *
 * A VM of that kind then starts with a hard link to the RAM file, mapped copy-on-write
 * (--ram-private: the file is never written), a copy of the device state and of the disk, and
 * capsem-vm --incoming. Its identity is its own from the first BOOT_CONFIG on: hostname,
 * environment (CAPSEM_VM_ID, ...), wall clock, and a fresh seed the agent reseeds the kernel's RNG
 * with. Runs on a worker thread (blocking: the template VM's boot). Trust: the cache is the
 * user's own state, like the images; the template VM is a Capsem VM like any other.
 */
#include "vmctl-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clockutil.h"
#include "fdutil.h"
#include "log.h"
#include "macro.h"
#include "strv.h"
#include "vmlimits.h"

#define TEMPLATE_BOOT_MS (5 * 60 * 1000) /* a Debian image under TCG on a busy machine */

/* The next event line from the template's capsem-vm (its "event" in ev, at most n bytes), or
 * -ETIMEDOUT / -EPIPE. */
static int next_event(int fd, char *buf, size_t cap, size_t *len, uint64_t until, char *ev,
		      size_t n)
{
	ssize_t l = fd_read_line(fd, buf, cap, len, until);
	if (l < 0)
		return l == -ETIMEDOUT ? -ETIMEDOUT : -EPIPE;
	json_t *j = json_loadb(buf, (size_t)l, 0, NULL);
	const char *e = json_string_value(json_object_get(j, "event"));
	const char *m = json_string_value(json_object_get(j, "message"));
	if (!m)
		m = json_string_value(json_object_get(j, "reason"));
	snprintf(ev, n, "%s%s%s", e ? e : "?", m ? ": " : "", m ? m : "");
	json_decref(j);
	fd_line_consume(buf, len, (size_t)l);
	return 0;
}

/* Boot a template VM in dir and suspend it once it is ready. */
static int make_template(struct prepjob *j, const char *dir, char **ret_error)
{
	_cleanup_strv_free_ char **a = NULL;
	int r = strv_push(&a, j->vm_bin);
	r |= strv_push(&a, "--vmdir");
	r |= strv_push(&a, dir);
	r |= strv_push(&a, "--kernel");
	r |= strv_push(&a, j->kernel);
	r |= strv_push(&a, "--initrd");
	r |= strv_push(&a, j->initrd);
	if (j->rootfs) {
		r |= strv_push(&a, "--rootfs");
		r |= strv_push(&a, j->rootfs);
	}
	r |= strv_push(&a, "--cpus");
	r |= strv_pushf(&a, "%u", j->cpus);
	r |= strv_push(&a, "--memory");
	r |= strv_pushf(&a, "%lluM", (unsigned long long)j->memory_mib);
	r |= strv_push(&a, "--hostname");
	r |= strv_push(&a, "capsem");
	r |= strv_push(&a, "--channel");
	r |= strv_push(&a, "serial");
	r |= strv_push(&a, "--ram-file");
	r |= strv_push(&a, VM_RAM_FILE);
	r |= strv_push(&a, "--ipc-fd");
	r |= strv_push(&a, "3");
	if (j->image_sha256[0]) {
		r |= strv_push(&a, "--image-sha256");
		r |= strv_push(&a, j->image_sha256);
	}
	if (j->want_disk) {
		r |= strv_push(&a, "--disk");
		r |= strv_pushf(&a, "%s/disk.img", dir);
	}
	/* a workspace like every VM's, over the port (its server's fids are restored in the
	 * clone's own folder, found by path) */
	r |= strv_push(&a, "--workspace");
	r |= strv_pushf(&a, "%s/" VMSPEC_WORKSPACE_DIR, dir);
	if (r < 0)
		return -ENOMEM;
	_cleanup_free_ char *ws = vmctl_path_join(dir, VMSPEC_WORKSPACE_DIR);
	if (!ws)
		return -ENOMEM;
	if (mkdir(ws, 0700) < 0 && errno != EEXIST)
		return negative_errno();
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return negative_errno();
	_cleanup_close_ int fd = sv[0];
	_cleanup_close_ int nullfd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	pid_t pid;
	r = nullfd < 0 ? negative_errno() : vmsup_spawn(a, nullfd, sv[1], &pid);
	safe_close(sv[1]);
	if (r < 0)
		return r;
	char buf[16384], ev[512] = "";
	size_t len = 0;
	uint64_t until = clock_ms(CLOCK_MONOTONIC) + TEMPLATE_BOOT_MS;
	while ((r = next_event(fd, buf, sizeof(buf), &len, until, ev, sizeof(ev))) == 0 &&
	       strncmp(ev, "ready", 5) != 0 && strncmp(ev, "error", 5) != 0 &&
	       strncmp(ev, "stopped", 7) != 0)
		;
	if (r == 0 && strncmp(ev, "ready", 5) == 0) {
		static const char cmd[] = "{\"cmd\":\"suspend\"}\n";
		r = fd_write_all(fd, cmd, sizeof(cmd) - 1);
		while (r == 0 &&
		       (r = next_event(fd, buf, sizeof(buf), &len, until, ev, sizeof(ev))) == 0 &&
		       strncmp(ev, "stopped", 7) != 0)
			;
		if (r == 0 && !strstr(ev, "suspended"))
			r = -EIO;
	} else if (r == 0) {
		r = -EIO;
	}
	if (r < 0) {
		(void)!asprintf(ret_error, "the template VM did not boot and save (%s)",
				r == -ETIMEDOUT ? "timed out"
				: ev[0]		? ev
						: strerror(-r));
		kill(pid, SIGKILL);
	}
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	return r;
}

/* dst: a copy of src (its holes kept). */
static int copy_file(const char *src, const char *dst)
{
	_cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (in < 0)
		return negative_errno();
	(void)unlink(dst);
	_cleanup_close_ int out =
		open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (out < 0)
		return negative_errno();
	return copy_sparse(in, out);
}

static char *join(const char *a, const char *b)
{
	char *p = NULL;
	return asprintf(&p, "%s/%s", a, b) < 0 ? NULL : p;
}

int snapstart_prepare(struct prepjob *j, char **ret_error)
{
	_cleanup_free_ char *kind = NULL, *tmp = NULL, *state = NULL;
	int r;
	if (!j->image_sha256[0])
		return -ENOENT;
	/* "-ws": the device model with the workspace's port (states of older models stay unused) */
	if (asprintf(&kind, "%s/cache/snapstart/%.16s-%uc-%llum-%llud-ws", j->home, j->image_sha256,
		     j->cpus, (unsigned long long)j->memory_mib,
		     (unsigned long long)(j->want_disk ? j->disk_mib : 0)) < 0 ||
	    asprintf(&tmp, "%s.new-XXXXXX", kind) < 0 || !(state = join(kind, VM_SUSPEND_STATE)))
		return -ENOMEM;
	if (access(state, F_OK) < 0) {
		log_info("snapshot start: making the saved state %s (a cold boot, once)", kind);
		_cleanup_free_ char *parent = strdup(kind);
		char *slash = parent ? strrchr(parent, '/') : NULL;
		if (slash)
			*slash = 0;
		/* a directory of its own: two creates of one kind may make it at the same time */
		r = !slash ? -ENOMEM : mkdir_p(parent, 0700);
		if (r == 0 && !mkdtemp(tmp))
			r = negative_errno();
		if (r == 0 && j->want_disk) {
			struct prepjob d = { .disk = join(tmp, "disk.img"),
					     .disk_mib = j->disk_mib };
			r = d.disk ? vmsup_make_disk(&d) : -ENOMEM;
			free(d.disk);
			if (d.error && !*ret_error)
				*ret_error = TAKE_PTR(d.error);
			free(d.error);
		}
		if (r == 0)
			r = make_template(j, tmp, ret_error);
		if (r == 0 && rename(tmp, kind) < 0 && errno != EEXIST && errno != ENOTEMPTY)
			r = negative_errno();
		(void)rm_rf(tmp); /* a lost race: someone else's is in place */
		if (r < 0) {
			if (!*ret_error)
				(void)!asprintf(ret_error, "cannot make the saved state: %s",
						strerror(-r));
			return r;
		}
	}
	/* the VM's own: a link to the RAM, copies of the devices' state and the disk */
	struct {
		const char *from, *to;
		int link;
	} files[] = {
		{ VM_RAM_FILE, SNAPSTART_RAM, 1 },	 { VM_SUSPEND_STATE, SNAPSTART_STATE, 0 },
		{ VM_SUSPEND_INFO, VM_SUSPEND_INFO, 0 }, { VM_WS_STATE, VM_WS_STATE, 0 },
		{ "disk.img", "disk.img", 0 },
	};
	for (size_t i = 0; i < ELEMENTSOF(files); i++) {
		if (!j->want_disk && streq(files[i].from, "disk.img"))
			continue;
		_cleanup_free_ char *f = join(kind, files[i].from),
				    *t = join(j->vmdir, files[i].to);
		if (!f || !t)
			return -ENOMEM;
		(void)unlink(t);
		r = files[i].link ? (link(f, t) < 0 ? negative_errno() : 0) : copy_file(f, t);
		if (r < 0) {
			(void)!asprintf(ret_error, "cannot %s %s to %s: %s",
					files[i].link ? "link" : "copy", f, t, strerror(-r));
			return r;
		}
	}
	return 0;
}
