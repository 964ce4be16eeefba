/* cfprobe.c - the confinement test hook (cfprobe.h). Trust boundary: none (the probe list comes
 * from the environment of whoever started the process, a test). Main thread, before any other
 * thread exists or while nothing else runs. */
#include "cfprobe.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fdutil.h"
#include "macro.h"
#include "parse.h"
#include "scfilter.h"

/* errno of one probe (0 = it succeeded), in the child */
static int probe(const char *kind, const char *arg)
{
	if (streq(kind, "open")) {
		int fd = open(arg, O_RDONLY | O_CLOEXEC);
		return fd < 0 ? errno : 0;
	}
	if (streq(kind, "create")) {
		char p[4200];
		snprintf(p, sizeof(p), "%s/.capsem-probe-%d", arg, (int)getpid());
		int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0)
			return errno;
		close(fd);
		unlink(p);
		return 0;
	}
	if (streq(kind, "exec")) {
		char *argv[] = { (char *)arg, NULL };
		char *envp[] = { NULL };
		execve(arg, argv, envp);
		return errno;
	}
	if (streq(kind, "connect")) {
		char host[64];
		const char *colon = strrchr(arg, ':');
		if (!colon || (size_t)(colon - arg) >= sizeof(host))
			return EINVAL;
		memcpy(host, arg, (size_t)(colon - arg));
		host[colon - arg] = 0;
		uint32_t port;
		if (parse_u32(colon + 1, &port) < 0 || port > 65535)
			return EINVAL;
		struct sockaddr_in sa = { .sin_family = AF_INET,
					  .sin_port = htons((uint16_t)port) };
		if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
			return EINVAL;
		int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (s < 0)
			return errno;
		int r = connect(s, (struct sockaddr *)&sa, sizeof(sa));
		return r < 0 ? errno : 0;
	}
	if (streq(kind, "ptrace")) {
		uint32_t pid;
		if (parse_u32(arg, &pid) < 0)
			return EINVAL;
		if (ptrace(PTRACE_ATTACH, (pid_t)pid, NULL, NULL) < 0)
			return errno;
		return 0;
	}
	return EINVAL;
}

/* The pid of a child of ours whose command line holds name (its arguments are NUL-separated:
 * each is matched), or -1. */
static int child_with(const char *name)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	int found = -1;
	while (d && found < 0 && (e = readdir(d))) {
		uint32_t pid;
		char p[64];
		_cleanup_free_ char *st = NULL, *cmd = NULL;
		size_t n = 0;
		if (parse_u32(e->d_name, &pid) < 0)
			continue;
		snprintf(p, sizeof(p), "/proc/%u/stat", pid);
		if (read_file_small(p, 4096, &st, NULL) < 0)
			continue;
		/* "pid (comm) S ppid ...": the third field after the command */
		const char *rp = strrchr(st, ')');
		char ppid_s[16];
		uint32_t ppid;
		if (!rp || strlen(rp) < 5)
			continue;
		size_t k = strspn(rp + 4, "0123456789");
		if (k == 0 || k >= sizeof(ppid_s))
			continue;
		memcpy(ppid_s, rp + 4, k);
		ppid_s[k] = 0;
		if (parse_u32(ppid_s, &ppid) < 0 || ppid != (uint32_t)getpid())
			continue;
		snprintf(p, sizeof(p), "/proc/%u/cmdline", pid);
		if (read_file_small(p, 65536, &cmd, &n) < 0)
			continue;
		for (size_t i = 0; i < n && found < 0; i += strlen(cmd + i) + 1)
			if (streq(cmd + i, name))
				found = (int)pid;
	}
	if (d)
		closedir(d);
	return found;
}

/* arg with "{child=NAME}" replaced by that child's pid (child_with; -1 when there is none):
 * the test cannot know it in advance. */
static void expand(const char *arg, char *out, size_t len)
{
	const char *t = strstr(arg, "{child=");
	const char *end = t ? strchr(t, '}') : NULL;
	if (!end) {
		snprintf(out, len, "%s", arg);
		return;
	}
	char name[256];
	size_t nl = (size_t)(end - t) - strlen("{child=");
	snprintf(name, sizeof(name), "%.*s", (int)MIN(nl, sizeof(name) - 1), t + strlen("{child="));
	snprintf(out, len, "%.*s%d%s", (int)(t - arg), arg, child_with(name), end + 1);
}

void cfprobe_run(const char *who)
{
	const char *env = getenv("CAPSEM_CONFINE_PROBE"), *only = getenv("CAPSEM_PROBE_ONLY");
	if (!env || !*env || (only && *only && !streq(only, who)))
		return;
	_cleanup_free_ char *list = strdup(env);
	if (!list)
		return;
	char *save = NULL;
	for (char *p = strtok_r(list, ";", &save); p; p = strtok_r(NULL, ";", &save)) {
		char *colon = strchr(p, ':');
		if (!colon)
			continue;
		*colon = 0;
		if (streq(p, "status")) {
			/* the caller's own no_new_privs and seccomp mode */
			_cleanup_free_ char *st = NULL;
			const char *nnp = NULL, *sc = NULL;
			if (read_file_small("/proc/self/status", 1u << 16, &st, NULL) == 0) {
				nnp = strstr(st, "NoNewPrivs:\t");
				sc = strstr(st, "\nSeccomp:\t");
			}
			fprintf(stderr, "confine-probe %s status:: NoNewPrivs=%c Seccomp=%c\n", who,
				nnp ? nnp[strlen("NoNewPrivs:\t")] : '?',
				sc ? sc[strlen("\nSeccomp:\t")] : '?');
			*colon = ':';
			continue;
		}
		if (streq(p, "die")) {
			/* the syscall in this very process: seccomp's kill ends it (SIGSYS) */
			fflush(stderr);
			long nr = scf_syscall_nr(colon + 1);
			if (nr >= 0)
				syscall(nr, 0, 0, 0, 0);
			fprintf(stderr, "confine-probe %s die:%s: survived\n", who, colon + 1);
			*colon = ':';
			continue;
		}
		char arg[4096];
		expand(colon + 1, arg, sizeof(arg));
		if (p[0] == '=' && !streq(p, "=exec")) {
			int e = probe(p + 1, arg);
			fprintf(stderr, "confine-probe %s %s:%s: %s\n", who, p, arg,
				e == 0 ? "ok" : strerrorname_np(e) ?: "error");
			*colon = ':';
			continue;
		}
		pid_t pid = fork();
		if (pid == 0) {
			/* an exec probe that succeeds runs the program: it must exit 0 */
			_exit(probe(p, arg) & 0xff);
		}
		int st = 0;
		if (pid > 0)
			while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
				;
		char res[64];
		if (pid < 0)
			snprintf(res, sizeof(res), "fork %s", strerrorname_np(errno));
		else if (WIFSIGNALED(st))
			snprintf(res, sizeof(res), "signal %d", WTERMSIG(st));
		else if (WEXITSTATUS(st) == 0)
			snprintf(res, sizeof(res), "ok");
		else
			snprintf(res, sizeof(res), "%s",
				 strerrorname_np(WEXITSTATUS(st)) ?: "error");
		fprintf(stderr, "confine-probe %s %s:%s: %s\n", who, p, arg, res);
		*colon = ':';
	}
	fflush(stderr);
}
