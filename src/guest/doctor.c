/* doctor.c - capsem-doctor, run inside the guest (capsem-guest dispatched by argv[0], reached
 * as /usr/local/bin/capsem-doctor -> /proc/1/exe in the Debian image, /usr/bin/capsem-doctor in
 * the initramfs). `capsem doctor VM [-k GROUP]` on the host runs it through the agent.
 *
 * The checks come in groups, run in this order (`capsem-doctor --list` prints them all):
 *   sandbox      the guest's walls: read-only root image and block device, no setuid, no
 *                modules, no /dev/mem, /proc/kcore, kallsyms addresses or debugfs, the kernel's
 *                hardening parameters, the workload cgroup (doctor-sandbox.c)
 *   network      layer by layer: interfaces, routes, IPv6, the proxies, DNS (denied and allowed
 *                names), the redirect, TLS through the Capsem CA, an HTTP denial by the proxy,
 *                the CA in each client's trust store (doctor-net.c)
 *   environment  hostname, the VM's identity, /etc/environment in every exec, the Python venv,
 *                swap on the VM's disk, the workspace, the system tools (doctor-env.c)
 *   runtimes     python3, pip, node, npm, git, curl start and work
 *   ai           each AI CLI starts, has its settings and sees only its placeholder key; git's
 *                GitHub credential is the placeholder
 *   mcp          the MCP relay reaches the host's gateway and lists its tools
 *   lifecycle    PID 1 handles poweroff/halt/reboot, the agent runs, the clock was set
 * Each check is pass, fail or skip (with the reason: not part of this image, egress not
 * configured) and its detail says what it verified. What the image should hold comes from
 * /etc/capsem/image.toml (capsem-builder writes it from the image config); without it (the
 * minimal image) the image-specific checks are skipped.
 *
 * Trust boundary: none new; it runs as root in the guest and reads the guest's own state (and
 * asks the host's proxy and gateway the questions any guest process may ask). Single-threaded;
 * children are run with a timeout and killed with their process group.
 */
#include "doctor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "doctor-int.h"
#include "fdutil.h"

static const struct group {
	const char *name;
	const char *what;
	void (*run)(struct doctor *d);
} groups[] = {
	{ "sandbox",
	  "read-only root, no setuid/modules/devmem/kcore/kallsyms/debugfs, kernel "
	  "hardening, workload limits",
	  doctor_sandbox },
	{ "network", "interfaces, routes, IPv6, proxies, DNS, redirect, TLS, HTTP denial, CA trust",
	  doctor_network },
	{ "environment", "hostname, VM identity, /etc/environment, venv, swap, workspace, tools",
	  doctor_environment },
	{ "runtimes", "python3, pip, node, npm, git, curl", doctor_runtimes },
	{ "ai", "AI CLIs start, are configured, hold placeholder keys; git's GitHub credential",
	  doctor_ai },
	{ "mcp", "the MCP relay reaches the host's gateway", doctor_mcp },
	{ "lifecycle", "PID 1's clean shutdown, the agent, the clock", doctor_lifecycle },
};

unsigned doctor_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned)(ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

void doctor_start(struct doctor *d)
{
	d->t0 = doctor_now_ms();
}

void doctor_add(struct doctor *d, const char *name, enum doctor_status st, const char *fmt, ...)
{
	if (d->n >= DOCTOR_MAX_CHECKS)
		return;
	struct doctor_check *c = &d->c[d->n++];
	va_list ap;
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->group = d->group;
	c->st = st;
	c->ms = d->t0 ? doctor_now_ms() - d->t0 : 0;
	d->t0 = 0;
	va_start(ap, fmt);
	vsnprintf(c->detail, sizeof(c->detail), fmt, ap);
	va_end(ap);
	/* one line */
	for (char *p = c->detail; *p; p++)
		if (*p == '\n' || *p == '\r' || *p == '\t')
			*p = ' ';
}

int doctor_run(char *const *argv, const char *input, unsigned timeout_ms, char *out, size_t n)
{
	int p[2], in[2] = { -1, -1 };
	out[0] = 0;
	if (pipe2(p, O_CLOEXEC) < 0)
		return negative_errno();
	if (input && pipe2(in, O_CLOEXEC) < 0) {
		int r = negative_errno();
		close(p[0]);
		close(p[1]);
		return r;
	}
	pid_t pid = fork();
	if (pid < 0) {
		int r = negative_errno();
		close(p[0]);
		close(p[1]);
		safe_close(in[0]);
		safe_close(in[1]);
		return r;
	}
	if (pid == 0) {
		int nul = input ? in[0] : open("/dev/null", O_RDONLY | O_CLOEXEC);
		(void)setpgid(0, 0);
		if (nul >= 0)
			dup2(nul, 0);
		dup2(p[1], 1);
		dup2(p[1], 2);
		execvp(argv[0], argv);
		_exit(errno == ENOENT ? 127 : 126);
	}
	close(p[1]);
	(void)setpgid(pid, pid);
	if (input) {
		/* small inputs: they fit the pipe's buffer, so this cannot block */
		close(in[0]);
		(void)fd_write_all(in[1], input, strlen(input));
		close(in[1]);
	}
	size_t len = 0;
	unsigned start = doctor_now_ms();
	int timed_out = 0;
	for (;;) {
		unsigned el = doctor_now_ms() - start;
		if (el >= timeout_ms) {
			timed_out = 1;
			break;
		}
		struct pollfd pf = { .fd = p[0], .events = POLLIN };
		int pr = poll(&pf, 1, (int)(timeout_ms - el));
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr <= 0) {
			timed_out = pr == 0;
			break;
		}
		char buf[1024];
		ssize_t k = read(p[0], buf, sizeof(buf));
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		size_t take = MIN((size_t)k, n - 1 - len);
		memcpy(out + len, buf, take);
		len += take;
	}
	out[len] = 0;
	close(p[0]);
	if (timed_out)
		(void)kill(-pid, SIGKILL);
	int ws;
	while (waitpid(pid, &ws, 0) < 0 && errno == EINTR)
		;
	if (timed_out)
		return -ETIMEDOUT;
	if (WIFEXITED(ws))
		return WEXITSTATUS(ws) == 127 ? -ENOENT : WEXITSTATUS(ws);
	return 128 + WTERMSIG(ws);
}

const char *doctor_first_line(const char *s, char *buf, size_t n)
{
	while (*s == '\n' || *s == ' ' || *s == '\r')
		s++;
	size_t l = strcspn(s, "\r\n");
	snprintf(buf, n, "%.*s", (int)MIN(l, n - 1), s);
	return buf;
}

int doctor_image_lists(const struct doctor *d, const char *key, const char *s)
{
	const struct toml_value *a = toml_table_get(d->image, key);
	for (size_t i = 0; i < toml_array_size(a); i++) {
		const char *v;
		if (toml_get_string(toml_array_at(a, i), &v, NULL) == 0 && streq(v, s))
			return 1;
	}
	return 0;
}

const struct toml_value *doctor_providers(const struct doctor *d)
{
	return toml_table_get(d->image, "providers");
}

int doctor_in_path(const char *name)
{
	const char *path = getenv("PATH");
	char full[512];
	if (!path || !*path)
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	while (*path) {
		size_t l = strcspn(path, ":");
		struct stat st;
		if (l > 0 && l < 256) {
			snprintf(full, sizeof(full), "%.*s/%s", (int)l, path, name);
			if (stat(full, &st) == 0 && S_ISREG(st.st_mode) && access(full, X_OK) == 0)
				return 1;
		}
		path += l;
		if (*path == ':')
			path++;
	}
	return 0;
}

/* ---- output ---- */

static void json_str(const char *s)
{
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

static const char *status_name(enum doctor_status s)
{
	return s == DOCTOR_PASS ? "pass" : s == DOCTOR_FAIL ? "fail" : "skip";
}

static void print_results(const struct doctor *d, int json, size_t np, size_t nf, size_t ns)
{
	if (json) {
		printf("{\"ok\":%s,\"passed\":%zu,\"failed\":%zu,\"skipped\":%zu,\"checks\":[",
		       nf ? "false" : "true", np, nf, ns);
		for (size_t i = 0; i < d->n; i++) {
			printf("%s{\"name\":", i ? "," : "");
			json_str(d->c[i].name);
			printf(",\"group\":\"%s\",\"status\":\"%s\",\"detail\":", d->c[i].group,
			       status_name(d->c[i].st));
			json_str(d->c[i].detail);
			printf(",\"ms\":%u}", d->c[i].ms);
		}
		printf("]}\n");
		return;
	}
	printf("%-16s %-11s %-6s %s\n", "CHECK", "GROUP", "STATUS", "DETAIL");
	for (size_t i = 0; i < d->n; i++)
		printf("%-16s %-11s %-6s %s\n", d->c[i].name, d->c[i].group,
		       d->c[i].st == DOCTOR_FAIL ? "FAIL" : status_name(d->c[i].st),
		       d->c[i].detail);
	printf("capsem-doctor: %zu passed, %zu failed, %zu skipped\n", np, nf, ns);
}

static void usage(void)
{
	printf("Usage: capsem-doctor [-k GROUP[,GROUP...]] [--json] [--list]\n\n"
	       "Check this Capsem VM: its sandbox walls, the network path layer by layer, the\n"
	       "environment, the runtimes, the AI CLIs, the MCP relay and the lifecycle.\n"
	       "Each check says what it verified. Exit status 1 when a check fails, 2 for a\n"
	       "usage error.\n\n"
	       "  -k GROUP   run only these groups (repeatable; see --list)\n"
	       "  --list     print the groups and what each checks\n"
	       "  --json     print the results as one JSON object\n");
}

/* Mark the groups named in a comma-separated list; -EINVAL for an unknown one. */
static int select_groups(const char *list, int *want)
{
	while (*list) {
		size_t l = strcspn(list, ","), i;
		for (i = 0; i < ELEMENTSOF(groups); i++)
			if (strlen(groups[i].name) == l && strncmp(groups[i].name, list, l) == 0)
				break;
		if (i == ELEMENTSOF(groups)) {
			fprintf(stderr, "capsem-doctor: unknown group '%.*s' (see --list)\n",
				(int)MIN(l, 64), list);
			return -EINVAL;
		}
		want[i] = 1;
		list += l;
		if (*list == ',')
			list++;
	}
	return 0;
}

int doctor_main(int argc, char **argv)
{
	static struct doctor d;
	int json = 0, want[ELEMENTSOF(groups)] = { 0 }, any = 0;
	for (int i = 1; i < argc; i++) {
		if (streq(argv[i], "--json"))
			json = 1;
		else if (streq(argv[i], "-h") || streq(argv[i], "--help")) {
			usage();
			return 0;
		} else if (streq(argv[i], "--list")) {
			for (size_t g = 0; g < ELEMENTSOF(groups); g++)
				printf("%-12s %s\n", groups[g].name, groups[g].what);
			return 0;
		} else if (streq(argv[i], "-k") && i + 1 < argc) {
			if (select_groups(argv[++i], want) < 0)
				return 2;
			any = 1;
		} else if (strncmp(argv[i], "-k", 2) == 0 && argv[i][2]) {
			if (select_groups(argv[i] + 2, want) < 0)
				return 2;
			any = 1;
		} else {
			fprintf(stderr, "capsem-doctor: unknown argument '%s' (see --help)\n",
				argv[i]);
			return 2;
		}
	}
	size_t len = 0;
	if (read_file_small(DOCTOR_IMAGE_TOML, 64 * 1024, &d.image_text, &len) == 0 &&
	    toml_parse(d.image_text, len, &d.image, NULL) < 0)
		d.image = NULL;
	d.egress = access(DOCTOR_CA_PEM, F_OK) == 0;

	for (size_t g = 0; g < ELEMENTSOF(groups); g++)
		if (!any || want[g]) {
			d.group = groups[g].name;
			groups[g].run(&d);
		}

	size_t np = 0, nf = 0, ns = 0;
	for (size_t i = 0; i < d.n; i++)
		d.c[i].st == DOCTOR_PASS ? np++ : d.c[i].st == DOCTOR_FAIL ? nf++ : ns++;
	print_results(&d, json, np, nf, ns);
	toml_free(d.image);
	free(d.image_text);
	return nf ? 1 : 0;
}
