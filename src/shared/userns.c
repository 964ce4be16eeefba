/* userns.c - see userns.h.
 *
 * The child unshares its user and mount namespaces and tells the parent, which maps it with
 * newuidmap/newgidmap (setuid helpers that check /etc/subuid and /etc/subgid themselves) and
 * tells it to go on. Trust boundary: /etc/subuid and /etc/subgid are the system's (root's) files;
 * the builder only reads its own line. Main thread of capsem-builder (single-threaded: the child
 * goes on running ordinary code after fork).
 */
#include "userns.h"

#include <errno.h>
#include <inttypes.h>
#include <pwd.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fdutil.h"
#include "log.h"
#include "macro.h"
#include "parse.h"

int userns_parse_subid(const char *text, const char *name, uint32_t id, uint32_t need,
		       uint32_t *ret_start)
{
	char idtext[16];
	snprintf(idtext, sizeof(idtext), "%" PRIu32, id);
	int found = 0;
	for (const char *ln = text; ln && *ln;) {
		const char *nl = strchr(ln, '\n');
		size_t len = nl ? (size_t)(nl - ln) : strlen(ln);
		char line[256];
		if (len < sizeof(line)) {
			memcpy(line, ln, len);
			line[len] = 0;
			char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
			uint32_t start, count;
			if (c2) {
				*c1 = *c2 = 0;
				if ((streq(line, name) || streq(line, idtext)) &&
				    parse_u32(c1 + 1, &start) == 0 &&
				    parse_u32(c2 + 1, &count) == 0) {
					found = 1;
					if (count >= need && start > 0) {
						*ret_start = start;
						return 0;
					}
				}
			}
		}
		ln = nl ? nl + 1 : NULL;
	}
	return found ? -ERANGE : -ENOENT;
}

struct ids {
	uid_t uid;
	gid_t gid;
	uint32_t sub_uid, sub_gid;
	char *newuidmap, *newgidmap;
};

static void ids_done(struct ids *ids)
{
	free(ids->newuidmap);
	free(ids->newgidmap);
}

static int subid(const char *file, const char *name, uint32_t id, uint32_t *ret)
{
	_cleanup_free_ char *text = NULL;
	int r = read_file_small(file, 1u << 20, &text, NULL);
	if (r < 0)
		return r;
	return userns_parse_subid(text, name, id, USERNS_IDS - 1, ret);
}

static int ids_find(struct ids *ids, char *why, size_t why_len)
{
	*ids = (struct ids){ .uid = getuid(), .gid = getgid() };
	struct passwd *pw = getpwuid(ids->uid);
	const char *name = pw ? pw->pw_name : "";
	int r = find_program("newuidmap", &ids->newuidmap);
	if (r == 0)
		r = find_program("newgidmap", &ids->newgidmap);
	if (r < 0) {
		snprintf(why, why_len,
			 "newuidmap and newgidmap are missing (sudo apt install uidmap)");
		return r;
	}
	int ru = subid("/etc/subuid", name, ids->uid, &ids->sub_uid);
	int rg = subid("/etc/subgid", name, ids->gid, &ids->sub_gid);
	if (ru < 0 || rg < 0) {
		snprintf(why, why_len,
			 "%s has no range of %u subordinate %s in %s (sudo usermod "
			 "--add-subuids 100000-165535 --add-subgids 100000-165535 %s)",
			 *name ? name : "this user", USERNS_IDS - 1, ru < 0 ? "uids" : "gids",
			 ru < 0 ? "/etc/subuid" : "/etc/subgid", *name ? name : "USER");
		return ru < 0 ? ru : rg;
	}
	return 0;
}

int userns_check(char *why, size_t why_len)
{
	struct ids ids;
	int r = ids_find(&ids, why, why_len);
	ids_done(&ids);
	return r;
}

/* newuidmap PID 0 ID 1 1 SUB 65535 (or newgidmap): 0 or -EIO */
static int map(const char *helper, pid_t pid, uint32_t id, uint32_t sub)
{
	char spid[16], sid[16], ssub[16], scount[16];
	snprintf(spid, sizeof(spid), "%d", (int)pid);
	snprintf(sid, sizeof(sid), "%" PRIu32, id);
	snprintf(ssub, sizeof(ssub), "%" PRIu32, sub);
	snprintf(scount, sizeof(scount), "%u", USERNS_IDS - 1);
	char *argv[] = { (char *)helper, spid, "0", sid, "1", "1", ssub, scount, NULL };
	int r = run_program_quiet(argv);
	return r == 0 ? 0 : r < 0 ? r : -EIO;
}

int userns_run(int (*fn)(void *), void *arg, char *why, size_t why_len)
{
	why[0] = 0;
	struct ids ids;
	int r = ids_find(&ids, why, why_len);
	if (r < 0) {
		ids_done(&ids);
		return r;
	}
	int up[2], down[2]; /* up: the child has unshared; down: the parent has mapped it */
	if (pipe2(up, O_CLOEXEC) < 0) {
		ids_done(&ids);
		return negative_errno();
	}
	if (pipe2(down, O_CLOEXEC) < 0) {
		r = negative_errno();
		safe_close(up[0]);
		safe_close(up[1]);
		ids_done(&ids);
		return r;
	}
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		safe_close(up[0]);
		safe_close(down[1]);
		char e = 0, go = 0;
		if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
			e = (char)errno;
		if (write(up[1], &e, 1) != 1 || e || read(down[0], &go, 1) != 1 || !go)
			_exit(125);
		/* our mounts (mmdebstrap's /proc, /dev in its chroot) stay ours */
		if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
			_exit(125);
		/* root's programs (chroot, mksquashfs ...): a normal user's PATH lacks sbin */
		const char *path = getenv("PATH");
		char *root_path = NULL;
		if (asprintf(&root_path, "/usr/local/sbin:/usr/sbin:/sbin:%s",
			     path && *path ? path : "/usr/local/bin:/usr/bin:/bin") < 0 ||
		    setenv("PATH", root_path, 1) < 0)
			_exit(125);
		free(root_path);
		int fr = fn(arg);
		fflush(NULL);
		_exit(fr == 0 ? 0 : 1);
	}
	safe_close(up[1]);
	safe_close(down[0]);
	if (pid < 0) {
		r = negative_errno();
		safe_close(up[0]);
		safe_close(down[1]);
		ids_done(&ids);
		return r;
	}
	char e = 0, go = 0;
	if (read(up[0], &e, 1) != 1)
		e = EIO;
	if (e)
		snprintf(why, why_len, "cannot make a user namespace: %s%s", strerror(e),
			 e == EPERM || e == ENOSPC ? " (user namespaces are off for normal users: "
						     "sysctl user.max_user_namespaces)"
						   : "");
	else if (map(ids.newuidmap, pid, ids.uid, ids.sub_uid) < 0 ||
		 map(ids.newgidmap, pid, ids.gid, ids.sub_gid) < 0)
		snprintf(why, why_len,
			 "newuidmap/newgidmap refused to map uid %u gid %u and their "
			 "subordinate ids (see /etc/subuid, /etc/subgid)",
			 (unsigned)ids.uid, (unsigned)ids.gid);
	else
		go = 1;
	(void)!write(down[1], &go, 1);
	safe_close(up[0]);
	safe_close(down[1]);
	ids_done(&ids);
	int st = 0;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return negative_errno();
	if (!go)
		return -EPERM;
	if (WIFEXITED(st) && WEXITSTATUS(st) == 125) {
		snprintf(why, why_len, "cannot set up the user namespace's mounts");
		return -EPERM;
	}
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EIO;
}
