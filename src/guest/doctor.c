/* doctor.c - capsem-doctor, run inside the guest (capsem-guest dispatched by argv[0], reached
 * as /usr/local/bin/capsem-doctor -> /proc/1/exe in the Debian image, /usr/bin/capsem-doctor in
 * the initramfs). `capsem doctor VM` on the host runs it through the agent.
 *
 * It checks the sandbox invariants of DESIGN.md §5 and that the image's tools start:
 *   rootfs-ro    the root image is mounted read-only and a write to it fails with EROFS
 *   setid        no setuid/setgid file on the root file system (not crossing mounts)
 *   modules      the kernel loads no modules (/proc/modules absent, or empty and disabled)
 *   devmem       no /dev/mem, /dev/kmem, /dev/port
 *   nics         no network interface but lo and the dummy capsem0
 *   egress       every route goes into the dummy capsem0 and the net and DNS proxies listen
 *                (nftables sends every TCP connection and DNS query to them)
 *   workload     this command (an exec, like every command run through the agent) is in the
 *                workload cgroup, whose pids.max and memory.max are set, and PID 1 is not
 *                (cgroup.h: the system side keeps its reserve)
 *   ca-curl, ca-python, ca-node   the Capsem CA is in the trust store each client uses
 *   python3, node, npm, git, curl the tools of this image start
 *   cli:<name>   each AI CLI starts (`CLI --version`, 60 s cap: TCG is slow)
 * Each is pass, fail or skip (with the reason: not part of this image, egress not configured).
 * What the image should hold comes from /etc/capsem/image.toml (capsem-builder writes it from
 * the image config); without it (the minimal image) the tool checks are skipped. The egress and
 * CA checks are skipped until /etc/capsem/ca.pem exists (the host's boot config provides it).
 *
 * Trust boundary: none new; it runs as root in the guest and only reads the guest's own state.
 * Single-threaded; children are run with a timeout and killed with their process group.
 */
#include "doctor.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cgroup.h"
#include "fdutil.h"
#include "macro.h"
#include "netsetup.h"
#include "parse.h"
#include "toml.h"

#define OUT_MAX 4096
#define CLI_TIMEOUT_MS 60000
#define TOOL_TIMEOUT_MS 30000
#define EGRESS_NET_PORT NETSETUP_NET_PORT
#define EGRESS_DNS_PORT NETSETUP_DNS_PORT
#define MAX_CHECKS 48

enum status { ST_PASS, ST_FAIL, ST_SKIP };

struct check {
	char name[32];
	enum status st;
	char detail[256];
	unsigned ms;
};

struct doctor {
	struct check c[MAX_CHECKS];
	size_t n;
	struct toml_value *image; /* /etc/capsem/image.toml, or NULL */
	char *image_text;
};

static unsigned now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned)(ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

_printf_(4, 5) static void add(struct doctor *d, const char *name, enum status st, const char *fmt,
			       ...)
{
	if (d->n >= MAX_CHECKS)
		return;
	struct check *c = &d->c[d->n++];
	va_list ap;
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->st = st;
	va_start(ap, fmt);
	vsnprintf(c->detail, sizeof(c->detail), fmt, ap);
	va_end(ap);
	/* one line */
	for (char *p = c->detail; *p; p++)
		if (*p == '\n' || *p == '\r' || *p == '\t')
			*p = ' ';
}

/* Run argv with stdout+stderr captured (first OUT_MAX-1 bytes) and a timeout. Returns the exit
 * status (0..255, 128+signal), -ETIMEDOUT (killed), -ENOENT (not found) or -errno. */
static int run(char *const *argv, unsigned timeout_ms, char *out, size_t n)
{
	int p[2];
	out[0] = 0;
	if (pipe2(p, O_CLOEXEC) < 0)
		return negative_errno();
	pid_t pid = fork();
	if (pid < 0) {
		int r = negative_errno();
		close(p[0]);
		close(p[1]);
		return r;
	}
	if (pid == 0) {
		int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
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
	size_t len = 0;
	unsigned start = now_ms();
	int timed_out = 0;
	for (;;) {
		unsigned el = now_ms() - start;
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

/* The first non-empty line of s, copied into buf. */
static const char *first_line(const char *s, char *buf, size_t n)
{
	while (*s == '\n' || *s == ' ' || *s == '\r')
		s++;
	size_t l = strcspn(s, "\r\n");
	snprintf(buf, n, "%.*s", (int)MIN(l, n - 1), s);
	return buf;
}

/* ---- the checks ---- */

/* The first four fields of a /proc/mounts line (device, mount point, type, options), split in
 * place. 0, or -EINVAL when the line has fewer. */
static int mount_fields(char *line, char *ret[4])
{
	for (int i = 0; i < 4; i++) {
		line += strspn(line, " ");
		if (!*line)
			return -EINVAL;
		ret[i] = line;
		line += strcspn(line, " ");
		if (*line)
			*line++ = 0;
	}
	return 0;
}

static void check_rootfs(struct doctor *d)
{
	_cleanup_free_ char *mounts = NULL;
	if (read_file_small("/proc/mounts", 1u << 20, &mounts, NULL) < 0) {
		add(d, "rootfs-ro", ST_FAIL, "cannot read /proc/mounts");
		return;
	}
	const char *dev = "", *dir = "", *type = "", *opts = "";
	int found = 0, ro = 0;
	for (char *line = mounts; line && *line;) {
		char *nl = strchr(line, '\n'), *f[4];
		if (nl)
			*nl = 0;
		if (mount_fields(line, f) == 0 && streq(f[1], DOCTOR_ROOTFS_DIR)) {
			dev = f[0];
			dir = f[1];
			type = f[2];
			opts = f[3];
			found = 1;
			ro = strncmp(opts, "ro,", 3) == 0 || streq(opts, "ro") ||
			     strstr(opts, ",ro,") != NULL;
			break;
		}
		line = nl ? nl + 1 : NULL;
	}
	if (!found) {
		add(d, "rootfs-ro", ST_SKIP,
		    "no root image (the minimal image runs from its "
		    "initramfs)");
		return;
	}
	int fd = open(DOCTOR_ROOTFS_DIR "/.capsem-doctor-probe",
		      O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	int err = fd < 0 ? errno : 0;
	if (fd >= 0) {
		close(fd);
		(void)unlink(DOCTOR_ROOTFS_DIR "/.capsem-doctor-probe");
	}
	if (ro && err == EROFS)
		add(d, "rootfs-ro", ST_PASS, "%s on %s is %s, read-only (writes fail: EROFS)", dev,
		    dir, type);
	else
		add(d, "rootfs-ro", ST_FAIL, "%s on %s (%s): %s", dev, dir, type,
		    ro ? "a write did not fail with EROFS" : "mounted read-write");
}

static struct {
	size_t count;
	char first[200];
} setid;

static int setid_one(const char *path, const struct stat *st, int type, struct FTW *f)
{
	(void)f;
	if (type == FTW_F && (st->st_mode & (S_ISUID | S_ISGID))) {
		if (setid.count++ == 0)
			snprintf(setid.first, sizeof(setid.first), "%s", path);
	}
	return 0;
}

static void check_setid(struct doctor *d)
{
	setid.count = 0;
	setid.first[0] = 0;
	if (nftw("/", setid_one, 32, FTW_PHYS | FTW_MOUNT) < 0) {
		add(d, "setid", ST_FAIL, "cannot walk /: %s", strerror(errno));
		return;
	}
	if (setid.count)
		add(d, "setid", ST_FAIL, "%zu setuid/setgid files, e.g. %s", setid.count,
		    setid.first);
	else
		add(d, "setid", ST_PASS, "no setuid/setgid file on the root file system");
}

static void check_modules(struct doctor *d)
{
	_cleanup_free_ char *mods = NULL, *dis = NULL;
	size_t len = 0;
	if (access("/proc/modules", F_OK) < 0) {
		add(d, "modules", ST_PASS, "the kernel has no module support (no /proc/modules)");
		return;
	}
	if (read_file_small("/proc/modules", 1u << 20, &mods, &len) < 0 || len > 0) {
		add(d, "modules", ST_FAIL, "kernel modules are loaded (/proc/modules)");
		return;
	}
	if (read_file_small("/proc/sys/kernel/modules_disabled", 64, &dis, NULL) == 0 &&
	    dis[0] == '1')
		add(d, "modules", ST_PASS, "no module loaded; loading disabled");
	else
		add(d, "modules", ST_FAIL, "module loading is possible (modules_disabled != 1)");
}

static void check_devmem(struct doctor *d)
{
	static const char *const devs[] = { "/dev/mem", "/dev/kmem", "/dev/port" };
	char found[128] = "";
	for (size_t i = 0; i < ELEMENTSOF(devs); i++)
		if (access(devs[i], F_OK) == 0) {
			size_t l = strlen(found);
			snprintf(found + l, sizeof(found) - l, "%s%s", l ? " " : "", devs[i]);
		}
	if (found[0])
		add(d, "devmem", ST_FAIL, "present: %s", found);
	else
		add(d, "devmem", ST_PASS, "no /dev/mem, /dev/kmem, /dev/port");
}

static void check_nics(struct doctor *d)
{
	DIR *dir = opendir("/sys/class/net");
	struct dirent *e;
	char bad[160] = "", seen[160] = "";
	if (!dir) {
		add(d, "nics", ST_FAIL, "cannot list /sys/class/net: %s", strerror(errno));
		return;
	}
	while ((e = readdir(dir))) {
		if (e->d_name[0] == '.')
			continue;
		int ok = streq(e->d_name, "lo") || streq(e->d_name, "capsem0");
		char *dst = ok ? seen : bad;
		size_t l = strlen(dst);
		if (l + strlen(e->d_name) + 2 < 160)
			snprintf(dst + l, 160 - l, "%s%.40s", l ? " " : "", e->d_name);
	}
	closedir(dir);
	if (bad[0])
		add(d, "nics", ST_FAIL, "unexpected interfaces: %s (only lo and capsem0 allowed)",
		    bad);
	else
		add(d, "nics", ST_PASS, "interfaces: %s", seen[0] ? seen : "(none)");
}

/* 1 when /proc/net/tcp lists a listener on 127.0.0.1:port. */
static int listening_local(unsigned port)
{
	_cleanup_free_ char *tcp = NULL;
	char want[32];
	if (read_file_small("/proc/net/tcp", 1u << 20, &tcp, NULL) < 0)
		return 0;
	snprintf(want, sizeof(want), "0100007F:%04X 00000000:0000 0A", port);
	return strstr(tcp, want) != NULL;
}

static void check_egress(struct doctor *d)
{
	_cleanup_free_ char *routes = NULL;
	char bad[128] = "";
	if (access(DOCTOR_CA_PEM, F_OK) < 0) {
		add(d, "egress", ST_SKIP, "egress not configured (no " DOCTOR_CA_PEM ")");
		return;
	}
	/* every route goes into the dummy (or lo): no packet can leave but through the proxies,
	 * which relay over vsock */
	if (read_file_small("/proc/net/route", 1u << 20, &routes, NULL) < 0) {
		add(d, "egress", ST_FAIL, "cannot read /proc/net/route");
		return;
	}
	char *line = strchr(routes, '\n');
	while (line && *++line) {
		size_t l = strcspn(line, "\t ");
		if (l && !(l == 7 && strncmp(line, "capsem0", 7) == 0) &&
		    !(l == 2 && strncmp(line, "lo", 2) == 0) && strlen(bad) + l + 2 < sizeof(bad))
			snprintf(bad + strlen(bad), sizeof(bad) - strlen(bad), "%s%.*s",
				 bad[0] ? " " : "", (int)l, line);
		line = strchr(line, '\n');
	}
	if (bad[0]) {
		add(d, "egress", ST_FAIL, "routes through other interfaces: %s", bad);
		return;
	}
	if (!listening_local(EGRESS_NET_PORT) || !listening_local(EGRESS_DNS_PORT)) {
		add(d, "egress", ST_FAIL,
		    "the net/DNS proxies are not listening on 127.0.0.1:%u/%u", EGRESS_NET_PORT,
		    EGRESS_DNS_PORT);
		return;
	}
	add(d, "egress", ST_PASS,
	    "only the dummy route; TCP and DNS go to the proxies on 127.0.0.1:%u and :%u",
	    EGRESS_NET_PORT, EGRESS_DNS_PORT);
}

/* The workload cgroup file's value as a number; -errno when it is missing or "max". */
static int workload_limit(const char *file, uint64_t *ret)
{
	char path[128];
	_cleanup_free_ char *text = NULL;
	snprintf(path, sizeof(path), CGROUP_WORKLOAD_DIR "/%s", file);
	int r = read_file_small(path, 64, &text, NULL);
	if (r < 0)
		return r;
	text[strcspn(text, "\n")] = 0;
	return parse_u64(text, ret);
}

static void check_workload(struct doctor *d)
{
	_cleanup_free_ char *self = NULL, *init = NULL;
	char path[256], init_path[256], swap[48] = "no swap accounting";
	uint64_t pids, mem, sw;

	if (read_file_small("/proc/self/cgroup", 64 * 1024, &self, NULL) < 0 ||
	    cgpure_self_path(self, path, sizeof(path)) < 0) {
		add(d, "workload", ST_FAIL, "no cgroup v2: exec commands run without limits");
		return;
	}
	if (strncmp(path, "/" CGROUP_WORKLOAD "/", strlen("/" CGROUP_WORKLOAD "/")) != 0) {
		add(d, "workload", ST_FAIL, "this command runs in cgroup %s, not in /%s", path,
		    CGROUP_WORKLOAD);
		return;
	}
	if (workload_limit("pids.max", &pids) < 0 || workload_limit("memory.max", &mem) < 0) {
		add(d, "workload", ST_FAIL, "the workload cgroup has no pids.max or memory.max");
		return;
	}
	if (read_file_small("/proc/1/cgroup", 64 * 1024, &init, NULL) < 0 ||
	    cgpure_self_path(init, init_path, sizeof(init_path)) < 0 ||
	    !streq(init_path, "/" CGROUP_SYSTEM)) {
		add(d, "workload", ST_FAIL, "PID 1 is not in /%s", CGROUP_SYSTEM);
		return;
	}
	if (workload_limit("memory.swap.max", &sw) == 0)
		snprintf(swap, sizeof(swap), "swap %llu MiB", (unsigned long long)(sw >> 20));
	add(d, "workload", ST_PASS, "in %s: at most %llu tasks, %llu MiB (%s); init in /%s", path,
	    (unsigned long long)pids, (unsigned long long)(mem >> 20), swap, CGROUP_SYSTEM);
}

/* 1 when the PEM body of ca (between the BEGIN/END lines) appears in the file at path. */
static int file_has_ca(const char *path, const char *ca)
{
	_cleanup_free_ char *text = NULL;
	const char *b = strstr(ca, "-----BEGIN CERTIFICATE-----");
	const char *e = b ? strstr(b, "-----END CERTIFICATE-----") : NULL;
	if (!e || !path || !*path || read_file_small(path, 16u << 20, &text, NULL) < 0)
		return 0;
	_cleanup_free_ char *body = strndup(b, (size_t)(e - b));
	return body && strstr(text, body) != NULL;
}

static void check_ca(struct doctor *d)
{
	_cleanup_free_ char *ca = NULL;
	char out[OUT_MAX], line[256];
	if (read_file_small(DOCTOR_CA_PEM, 64 * 1024, &ca, NULL) < 0) {
		add(d, "ca-curl", ST_SKIP, "egress not configured (no " DOCTOR_CA_PEM ")");
		add(d, "ca-python", ST_SKIP, "egress not configured");
		add(d, "ca-node", ST_SKIP, "egress not configured");
		return;
	}
	/* curl (OpenSSL): CURL_CA_BUNDLE, SSL_CERT_FILE, else Debian's bundle */
	const char *cb = getenv("CURL_CA_BUNDLE");
	if (!cb || !*cb)
		cb = getenv("SSL_CERT_FILE");
	if (!cb || !*cb)
		cb = "/etc/ssl/certs/ca-certificates.crt";
	if (access("/usr/bin/curl", X_OK) < 0)
		add(d, "ca-curl", ST_SKIP, "curl is not in this image");
	else
		add(d, "ca-curl", file_has_ca(cb, ca) ? ST_PASS : ST_FAIL, "%s %s the Capsem CA",
		    cb, file_has_ca(cb, ca) ? "holds" : "lacks");
	/* python: the file its default context loads */
	char *py[] = { "python3", "-c",
		       "import ssl,os;p=ssl.get_default_verify_paths();"
		       "print(os.environ.get('SSL_CERT_FILE') or p.cafile or p.openssl_cafile)",
		       NULL };
	int r = run(py, TOOL_TIMEOUT_MS, out, sizeof(out));
	if (r == -ENOENT)
		add(d, "ca-python", ST_SKIP, "python3 is not in this image");
	else if (r != 0)
		add(d, "ca-python", ST_FAIL, "python3 failed: %s", first_line(out, line, 200));
	else {
		first_line(out, line, sizeof(line));
		int ok = file_has_ca(line, ca);
		add(d, "ca-python", ok ? ST_PASS : ST_FAIL, "%s %s the Capsem CA", line,
		    ok ? "holds" : "lacks");
	}
	/* node: NODE_EXTRA_CA_CERTS (node does not read the system store by default) */
	const char *nx = getenv("NODE_EXTRA_CA_CERTS");
	if (access("/usr/local/bin/node", X_OK) < 0 && access("/usr/bin/node", X_OK) < 0)
		add(d, "ca-node", ST_SKIP, "node is not in this image");
	else if (!nx || !*nx)
		add(d, "ca-node", ST_FAIL, "NODE_EXTRA_CA_CERTS is not set");
	else
		add(d, "ca-node", file_has_ca(nx, ca) ? ST_PASS : ST_FAIL,
		    "NODE_EXTRA_CA_CERTS=%s %s the Capsem CA", nx,
		    file_has_ca(nx, ca) ? "holds" : "lacks");
}

/* 1 when the image config lists tool in `tools`. */
static int image_expects(const struct doctor *d, const char *tool)
{
	const struct toml_value *a = toml_table_get(d->image, "tools");
	for (size_t i = 0; i < toml_array_size(a); i++) {
		const char *s;
		if (toml_get_string(toml_array_at(a, i), &s, NULL) == 0 && streq(s, tool))
			return 1;
	}
	return 0;
}

static void check_tools(struct doctor *d)
{
	static const struct {
		const char *name;
		char *argv[5];
	} tools[] = {
		{ "python3",
		  { "python3", "-c", "import ssl, sys; print('Python', sys.version.split()[0])",
		    NULL } },
		{ "node", { "node", "-e", "console.log('node', process.version)", NULL } },
		{ "npm", { "npm", "--version", NULL } },
		{ "git", { "git", "--version", NULL } },
		{ "curl", { "curl", "--version", NULL } },
	};
	char out[OUT_MAX], line[200];
	for (size_t i = 0; i < ELEMENTSOF(tools); i++) {
		if (!d->image) {
			add(d, tools[i].name, ST_SKIP,
			    "no %s: not expected without " DOCTOR_IMAGE_TOML, tools[i].name);
			continue;
		}
		if (!image_expects(d, tools[i].name)) {
			add(d, tools[i].name, ST_SKIP, "not part of this image");
			continue;
		}
		unsigned t0 = now_ms();
		int r = run(tools[i].argv, TOOL_TIMEOUT_MS, out, sizeof(out));
		first_line(out, line, sizeof(line));
		if (r == 0)
			add(d, tools[i].name, ST_PASS, "%s", line);
		else
			add(d, tools[i].name, ST_FAIL, "%s",
			    r == -ENOENT      ? "not found in PATH"
			    : r == -ETIMEDOUT ? "timed out"
					      : line);
		d->c[d->n - 1].ms = now_ms() - t0;
	}
	/* git init in a scratch directory: the tool works, not only prints its version */
	if (d->image && image_expects(d, "git")) {
		char dir[] = "/tmp/capsem-doctor-XXXXXX";
		if (mkdtemp(dir)) {
			char *argv[] = { "git", "init", "-q", dir, NULL };
			int r = run(argv, TOOL_TIMEOUT_MS, out, sizeof(out));
			add(d, "git-init", r == 0 ? ST_PASS : ST_FAIL, "%s",
			    r == 0 ? "git init in /tmp works"
				   : first_line(out, line, sizeof(line)));
			char *rm[] = { "rm", "-rf", dir, NULL };
			(void)run(rm, TOOL_TIMEOUT_MS, out, sizeof(out));
		}
	}
}

static void check_clis(struct doctor *d)
{
	const struct toml_value *a = toml_table_get(d->image, "providers");
	char out[OUT_MAX], line[200], name[32];
	if (!d->image || toml_array_size(a) == 0) {
		add(d, "ai-clis", ST_SKIP, "no AI CLI in this image");
		return;
	}
	for (size_t i = 0; i < toml_array_size(a); i++) {
		const char *cli;
		if (toml_get_string(toml_table_get(toml_array_at(a, i), "cli"), &cli, NULL) < 0)
			continue;
		snprintf(name, sizeof(name), "cli:%.27s", cli);
		char *argv[] = { (char *)cli, "--version", NULL };
		unsigned t0 = now_ms();
		int r = run(argv, CLI_TIMEOUT_MS, out, sizeof(out));
		first_line(out, line, sizeof(line));
		if (r == 0)
			add(d, name, ST_PASS, "%s", line);
		else
			add(d, name, ST_FAIL, "%s --version: %s", cli,
			    r == -ENOENT      ? "not found in PATH"
			    : r == -ETIMEDOUT ? "timed out after 60 s"
					      : line);
		d->c[d->n - 1].ms = now_ms() - t0;
	}
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

static const char *status_name(enum status s)
{
	return s == ST_PASS ? "pass" : s == ST_FAIL ? "fail" : "skip";
}

int doctor_main(int argc, char **argv)
{
	struct doctor d = { 0 };
	int json = 0;
	for (int i = 1; i < argc; i++) {
		if (streq(argv[i], "--json"))
			json = 1;
		else if (streq(argv[i], "-h") || streq(argv[i], "--help")) {
			printf("Usage: capsem-doctor [--json]\n\nCheck this Capsem VM's sandbox "
			       "invariants and that its tools and AI CLIs start.\nExit status 1 "
			       "when a check fails.\n");
			return 0;
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

	check_rootfs(&d);
	check_setid(&d);
	check_modules(&d);
	check_devmem(&d);
	check_nics(&d);
	check_egress(&d);
	check_workload(&d);
	check_ca(&d);
	check_tools(&d);
	check_clis(&d);

	size_t np = 0, nf = 0, ns = 0;
	for (size_t i = 0; i < d.n; i++)
		d.c[i].st == ST_PASS ? np++ : d.c[i].st == ST_FAIL ? nf++ : ns++;
	if (json) {
		printf("{\"ok\":%s,\"passed\":%zu,\"failed\":%zu,\"skipped\":%zu,\"checks\":[",
		       nf ? "false" : "true", np, nf, ns);
		for (size_t i = 0; i < d.n; i++) {
			printf("%s{\"name\":", i ? "," : "");
			json_str(d.c[i].name);
			printf(",\"status\":\"%s\",\"detail\":", status_name(d.c[i].st));
			json_str(d.c[i].detail);
			printf(",\"ms\":%u}", d.c[i].ms);
		}
		printf("]}\n");
	} else {
		printf("%-12s %-6s %s\n", "CHECK", "STATUS", "DETAIL");
		for (size_t i = 0; i < d.n; i++)
			printf("%-12s %-6s %s\n", d.c[i].name,
			       d.c[i].st == ST_FAIL ? "FAIL" : status_name(d.c[i].st),
			       d.c[i].detail);
		printf("capsem-doctor: %zu passed, %zu failed, %zu skipped\n", np, nf, ns);
	}
	toml_free(d.image);
	free(d.image_text);
	return nf ? 1 : 0;
}
