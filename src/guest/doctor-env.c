/* doctor-env.c - capsem-doctor's "environment", "runtimes", "ai", "mcp" and "lifecycle" groups:
 * what an agent in the VM relies on, checked by using it.
 *
 *   environment
 *     hostname     the hostname is the VM's name (its id when it has none) and /etc/hostname
 *                  says the same
 *     vm-identity  CAPSEM_VM_ID (and CAPSEM_VM_NAME for a named VM) are in this exec's
 *                  environment
 *     etc-environment  every variable of /etc/environment is in this exec's environment
 *                  (the agent applies the file to every exec, as pam_env does to logins)
 *     venv         the image's Python venv is active: VIRTUAL_ENV names it, its bin/ leads PATH
 *                  and python3 runs inside it
 *     swap         a VM with a disk swaps to a file on it
 *     workspace    the host's folder is mounted on /root/workspace (virtio-fs or 9p) and writable
 *     sys-tools    the image's system tools are in PATH (mount, umount, swapon, vim,
 *                  poweroff, halt, reboot)
 *   runtimes       python3, node, npm, git, curl start; git init works; pip installs a package
 *                  (a wheel made here, offline) and uninstalls it again
 *   ai             cli:NAME starts (`NAME --version`, 60 s cap: TCG is slow); conf:NAME has
 *                  its settings files; key:NAME holds the host's placeholder, never a key;
 *                  github: git's credential for github.com is the GH_TOKEN placeholder
 *   mcp            mcp-relay: capsem-mcp-relay initializes with the host's gateway and lists
 *                  its tools
 *   lifecycle      init: PID 1 takes poweroff, halt and reboot's signals into its clean
 *                  shutdown; agent: capsem-agent runs; clock: the wall clock was set
 *
 * Trust boundary: none new (doctor.c). Single-threaded.
 */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bootargs.h"
#include "doctor-int.h"
#include "doctor.h"
#include "envfile.h"
#include "fdutil.h"
#include "init.h"
#include "parse.h"
#include "strv.h"

/* ---- environment ---- */

static void check_hostname(struct doctor *d)
{
	char host[256] = "", want[256] = "", etc[256] = "";
	_cleanup_free_ char *text = NULL;
	const char *name = getenv("CAPSEM_VM_NAME"), *id = getenv("CAPSEM_VM_ID");
	(void)gethostname(host, sizeof(host) - 1);
	if (read_file_small("/etc/hostname", 4096, &text, NULL) == 0)
		doctor_first_line(text, etc, sizeof(etc));
	if (name && *name) {
		/* a hostname has no '_' (vmctl.c turns them into '-') */
		snprintf(want, sizeof(want), "%s", name);
		for (char *p = want; *p; p++)
			if (*p == '_')
				*p = '-';
	} else if (id && *id) {
		snprintf(want, sizeof(want), "%s", id);
	}
	if (want[0] && !streq(host, want))
		doctor_add(d, "hostname", DOCTOR_FAIL, "the hostname is '%s', not the VM's '%s'",
			   host, want);
	else if (!streq(etc, host))
		doctor_add(d, "hostname", DOCTOR_FAIL,
			   "/etc/hostname says '%s', the hostname is '%s'", etc, host);
	else
		doctor_add(d, "hostname", DOCTOR_PASS, "'%s'%s, and /etc/hostname says so", host,
			   want[0] ? (name && *name ? " (the VM's name)" : " (the VM's id)") : "");
}

static void check_identity(struct doctor *d)
{
	const char *name = getenv("CAPSEM_VM_NAME"), *id = getenv("CAPSEM_VM_ID");
	if (!id || !*id)
		doctor_add(d, "vm-identity", DOCTOR_SKIP,
			   "no CAPSEM_VM_ID: not started by capsemd (capsem run --direct)");
	else
		doctor_add(d, "vm-identity", DOCTOR_PASS, "CAPSEM_VM_ID=%s%s%s", id,
			   name && *name ? " CAPSEM_VM_NAME=" : " (no name)", name ? name : "");
}

static void check_etc_environment(struct doctor *d)
{
	_cleanup_free_ char *text = NULL;
	_cleanup_strv_free_ char **env = NULL;
	size_t len = 0, n = 0;
	if (read_file_small(ENVFILE_PATH, ENVFILE_MAX, &text, &len) < 0) {
		doctor_add(d, "etc-environment", DOCTOR_SKIP, "no " ENVFILE_PATH " in this image");
		return;
	}
	if (envfile_parse(text, len, &env) < 0) {
		doctor_add(d, "etc-environment", DOCTOR_FAIL, "cannot parse " ENVFILE_PATH);
		return;
	}
	for (; env && env[n]; n++) {
		char *eq = strchr(env[n], '=');
		*eq = 0;
		const char *v = getenv(env[n]);
		if (!v || !streq(v, eq + 1)) {
			doctor_add(d, "etc-environment", DOCTOR_FAIL,
				   "%s is %s in this exec, '%.80s' in " ENVFILE_PATH, env[n],
				   v ? "different" : "not set", eq + 1);
			return;
		}
	}
	doctor_add(d, "etc-environment", DOCTOR_PASS,
		   "all %zu variables of " ENVFILE_PATH " are set in this exec", n);
}

static void check_venv(struct doctor *d)
{
	const char *venv = NULL, *ve = getenv("VIRTUAL_ENV"), *path = getenv("PATH");
	char out[DOCTOR_OUT_MAX], line[256], bin[280];
	if (toml_get_string(toml_table_get(d->image, "venv"), &venv, NULL) < 0) {
		doctor_add(d, "venv", DOCTOR_SKIP, "no Python venv in this image");
		return;
	}
	snprintf(bin, sizeof(bin), "%s/bin", venv);
	if (!ve || !streq(ve, venv)) {
		doctor_add(d, "venv", DOCTOR_FAIL, "VIRTUAL_ENV is '%s', not %s", ve ? ve : "",
			   venv);
		return;
	}
	if (!path || strncmp(path, bin, strlen(bin)) != 0 ||
	    (path[strlen(bin)] != ':' && path[strlen(bin)] != 0)) {
		doctor_add(d, "venv", DOCTOR_FAIL, "PATH does not start with %s", bin);
		return;
	}
	char *argv[] = { "python3", "-c", "import sys; print(sys.prefix)", NULL };
	doctor_start(d);
	int r = doctor_run(argv, NULL, DOCTOR_TOOL_TIMEOUT_MS, out, sizeof(out));
	doctor_first_line(out, line, sizeof(line));
	if (r != 0 || !streq(line, venv))
		doctor_add(d, "venv", DOCTOR_FAIL, "python3 runs in '%s', not in %s", line, venv);
	else
		doctor_add(d, "venv", DOCTOR_PASS,
			   "VIRTUAL_ENV=%s leads PATH and python3 runs in it (PEP 668 leaves it "
			   "writable)",
			   venv);
}

/* 1 when /proc/mounts has a mount on dir. */
static int mounted(const char *dir)
{
	_cleanup_free_ char *m = NULL;
	char pat[256];
	snprintf(pat, sizeof(pat), " %s ", dir);
	return read_file_small("/proc/mounts", 1u << 20, &m, NULL) == 0 && strstr(m, pat);
}

static void check_swap(struct doctor *d)
{
	_cleanup_free_ char *sw = NULL;
	if (!mounted(INIT_DISK_DIR)) {
		doctor_add(d, "swap", DOCTOR_SKIP, "no VM disk (a VM without a name has none)");
		return;
	}
	if (read_file_small("/proc/swaps", 64 * 1024, &sw, NULL) < 0) {
		doctor_add(d, "swap", DOCTOR_FAIL, "no /proc/swaps: the kernel has no swap");
		return;
	}
	const char *l = strstr(sw, INIT_SWAPFILE " ");
	if (!l) {
		doctor_add(d, "swap", DOCTOR_FAIL, "%s is not in use (/proc/swaps)", INIT_SWAPFILE);
		return;
	}
	uint32_t kib = 0;
	const char *p = l + strlen(INIT_SWAPFILE), *end;
	p += strspn(p, " \t");
	p += strcspn(p, " \t"); /* type */
	p += strspn(p, " \t");
	(void)parse_u32_prefix(p, &kib, &end);
	doctor_add(d, "swap", DOCTOR_PASS, "%s on the VM's disk: %u MiB", INIT_SWAPFILE, kib >> 10);
}

static void check_workspace(struct doctor *d)
{
	_cleanup_free_ char *cmdline = NULL, *m = NULL;
	struct bootargs b;
	char probe[] = BOOTARGS_WORKSPACE "/.capsem-doctor-XXXXXX";
	if (read_file_small("/proc/cmdline", 4096, &cmdline, NULL) < 0)
		cmdline = NULL;
	bootargs_parse(cmdline ? cmdline : "", &b);
	if (!b.workspace[0]) {
		doctor_add(d, "workspace", DOCTOR_SKIP,
			   "this VM has no workspace (capsem-vm alone)");
		return;
	}
	/* QEMU's 9p, capsem-vm's 9p over the port "capsem.ws", or virtio-fs */
	const char *type =
		streq(b.workspace, "9p") || streq(b.workspace, "serial") ? " 9p " : " virtiofs ";
	char pat[64];
	snprintf(pat, sizeof(pat), " " BOOTARGS_WORKSPACE "%s", type);
	if (read_file_small("/proc/mounts", 1u << 20, &m, NULL) < 0 || !strstr(m, pat)) {
		doctor_add(d, "workspace", DOCTOR_FAIL, BOOTARGS_WORKSPACE " is not mounted (%s)",
			   b.workspace);
		return;
	}
	int fd = mkstemp(probe);
	if (fd < 0) {
		doctor_add(d, "workspace", DOCTOR_FAIL,
			   "cannot write in " BOOTARGS_WORKSPACE ": %s", strerror(errno));
		return;
	}
	close(fd);
	(void)unlink(probe);
	doctor_add(d, "workspace", DOCTOR_PASS,
		   "the host's folder is on " BOOTARGS_WORKSPACE " (%.*s) and writable",
		   (int)strlen(type) - 2, type + 1);
}

static void check_sys_tools(struct doctor *d)
{
	const struct toml_value *a = toml_table_get(d->image, "system_tools");
	char missing[160] = "";
	size_t n = toml_array_size(a);
	if (n == 0) {
		doctor_add(d, "sys-tools", DOCTOR_SKIP, "this image lists no system tools");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const char *s;
		if (toml_get_string(toml_array_at(a, i), &s, NULL) == 0 && !doctor_in_path(s)) {
			size_t l = strlen(missing);
			snprintf(missing + l, sizeof(missing) - l, "%s%.30s", l ? " " : "", s);
		}
	}
	if (missing[0])
		doctor_add(d, "sys-tools", DOCTOR_FAIL, "not in PATH: %s", missing);
	else
		doctor_add(d, "sys-tools", DOCTOR_PASS,
			   "all %zu in PATH (mount, vim, poweroff, ...)", n);
}

void doctor_environment(struct doctor *d)
{
	check_hostname(d);
	check_identity(d);
	check_etc_environment(d);
	check_venv(d);
	check_swap(d);
	check_workspace(d);
	check_sys_tools(d);
}

/* ---- runtimes ---- */

/* pip installs a wheel made here (no index, no network) into the active environment, python
 * imports it from there, pip uninstalls it */
static const char pip_script[] =
	"import base64,hashlib,os,subprocess,sys,tempfile,zipfile\n"
	"t=tempfile.mkdtemp(prefix='capsem-doctor-')\n"
	"w=os.path.join(t,'capsem_doctor_probe-1.0-py3-none-any.whl')\n"
	"i='capsem_doctor_probe-1.0.dist-info/'\n"
	"f={'capsem_doctor_probe/__init__.py':b'OK=1\\n',"
	"i+'METADATA':b'Metadata-Version: 2.1\\nName: capsem-doctor-probe\\nVersion: 1.0\\n',"
	"i+'WHEEL':b'Wheel-Version: 1.0\\nGenerator: capsem-doctor\\nRoot-Is-Purelib: "
	"true\\nTag: py3-none-any\\n'}\n"
	"h=lambda b:base64.urlsafe_b64encode(hashlib.sha256(b).digest()).rstrip(b'=').decode()\n"
	"r=''.join('%s,sha256=%s,%d\\n'%(n,h(b),len(b)) for n,b in f.items())+i+'RECORD,,\\n'\n"
	"z=zipfile.ZipFile(w,'w')\n"
	"[z.writestr(n,b) for n,b in f.items()]\n"
	"z.writestr(i+'RECORD',r)\n"
	"z.close()\n"
	"q=lambda *a:subprocess.run(a,stdout=subprocess.PIPE,stderr=subprocess.STDOUT,text=True)\n"
	"p=q('pip','install','-q','--no-index','--no-deps',w)\n"
	"if p.returncode: print('install:',p.stdout.strip().splitlines()[-1:]); sys.exit(1)\n"
	"p=q('python3','-c','import capsem_doctor_probe as m; print(m.__file__)')\n"
	"print('installed:',p.stdout.strip())\n"
	"u=q('pip','uninstall','-y','-q','capsem-doctor-probe')\n"
	"sys.exit(p.returncode or u.returncode)\n";

static void check_pip(struct doctor *d)
{
	char out[DOCTOR_OUT_MAX], line[256];
	char *argv[] = { "python3", "-c", (char *)pip_script, NULL };
	if (!doctor_image_lists(d, "tools", "pip")) {
		doctor_add(d, "pip", DOCTOR_SKIP, "not part of this image");
		return;
	}
	doctor_start(d);
	int r = doctor_run(argv, NULL, 2 * DOCTOR_TOOL_TIMEOUT_MS, out, sizeof(out));
	const char *inst = strstr(out, "installed: ");
	if (r == 0 && inst)
		doctor_add(d, "pip", DOCTOR_PASS, "pip install of a local wheel works: %s",
			   doctor_first_line(inst + 11, line, sizeof(line)));
	else
		doctor_add(d, "pip", DOCTOR_FAIL, "pip install failed: %s",
			   r == -ETIMEDOUT ? "timed out"
					   : doctor_first_line(out, line, sizeof(line)));
}

void doctor_runtimes(struct doctor *d)
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
	char out[DOCTOR_OUT_MAX], line[200];
	for (size_t i = 0; i < ELEMENTSOF(tools); i++) {
		if (!d->image) {
			doctor_add(d, tools[i].name, DOCTOR_SKIP,
				   "no %s: not expected without " DOCTOR_IMAGE_TOML, tools[i].name);
			continue;
		}
		if (!doctor_image_lists(d, "tools", tools[i].name)) {
			doctor_add(d, tools[i].name, DOCTOR_SKIP, "not part of this image");
			continue;
		}
		doctor_start(d);
		int r = doctor_run(tools[i].argv, NULL, DOCTOR_TOOL_TIMEOUT_MS, out, sizeof(out));
		doctor_first_line(out, line, sizeof(line));
		if (r == 0)
			doctor_add(d, tools[i].name, DOCTOR_PASS, "%s", line);
		else
			doctor_add(d, tools[i].name, DOCTOR_FAIL, "%s",
				   r == -ENOENT	     ? "not found in PATH"
				   : r == -ETIMEDOUT ? "timed out"
						     : line);
	}
	if (d->image)
		check_pip(d);
	/* git init in a scratch directory: the tool works, not only prints its version */
	if (d->image && doctor_image_lists(d, "tools", "git")) {
		char dir[] = "/tmp/capsem-doctor-XXXXXX";
		if (mkdtemp(dir)) {
			char *argv[] = { "git", "init", "-q", dir, NULL };
			doctor_start(d);
			int r = doctor_run(argv, NULL, DOCTOR_TOOL_TIMEOUT_MS, out, sizeof(out));
			doctor_add(d, "git-init", r == 0 ? DOCTOR_PASS : DOCTOR_FAIL, "%s",
				   r == 0 ? "git init in /tmp works"
					  : doctor_first_line(out, line, sizeof(line)));
			char *rm[] = { "rm", "-rf", dir, NULL };
			(void)doctor_run(rm, NULL, DOCTOR_TOOL_TIMEOUT_MS, out, sizeof(out));
		}
	}
}

/* ---- ai ---- */

static void check_cli_files(struct doctor *d, const struct toml_value *p, const char *cli)
{
	const struct toml_value *files = toml_table_get(p, "files");
	char name[32], missing[160] = "";
	size_t n = toml_array_size(files);
	snprintf(name, sizeof(name), "conf:%.26s", cli);
	if (n == 0) {
		doctor_add(d, name, DOCTOR_SKIP, "the image seeds no settings for %s", cli);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const char *f;
		struct stat st;
		if (toml_get_string(toml_array_at(files, i), &f, NULL) == 0 &&
		    (stat(f, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size == 0)) {
			size_t l = strlen(missing);
			snprintf(missing + l, sizeof(missing) - l, "%s%.60s", l ? " " : "", f);
		}
	}
	if (missing[0])
		doctor_add(d, name, DOCTOR_FAIL, "missing or empty: %s", missing);
	else
		doctor_add(d, name, DOCTOR_PASS, "its %zu settings file%s in place", n,
			   n == 1 ? " is" : "s are");
}

/* 1 when s is one of the host's placeholders (credentials.c: "...capsem-placeholder" or
 * "..._capsem_placeholder"), never a real key. */
static int is_placeholder(const char *s)
{
	return strstr(s, "capsem-placeholder") || strstr(s, "capsem_placeholder");
}

static void check_cli_key(struct doctor *d, const struct toml_value *p, const char *cli)
{
	const char *envname;
	char name[32];
	snprintf(name, sizeof(name), "key:%.27s", cli);
	if (toml_get_string(toml_table_get(p, "api_key_env"), &envname, NULL) < 0) {
		doctor_add(d, name, DOCTOR_SKIP, "%s takes no API key variable", cli);
		return;
	}
	const char *v = getenv(envname);
	if (!v || !*v)
		doctor_add(d, name, DOCTOR_SKIP,
			   "no %s: the host has no key for it (capsem: set it on the host)",
			   envname);
	else if (is_placeholder(v))
		doctor_add(d, name, DOCTOR_PASS,
			   "%s is the host's placeholder (the proxy swaps the key in)", envname);
	else
		doctor_add(d, name, DOCTOR_FAIL,
			   "%s holds a value that is not the placeholder: keys belong on the host",
			   envname);
}

static void check_github(struct doctor *d)
{
	char out[DOCTOR_OUT_MAX];
	const char *tok = getenv("GH_TOKEN");
	char *argv[] = { "git", "credential", "fill", NULL };
	if (!doctor_image_lists(d, "tools", "git")) {
		doctor_add(d, "github", DOCTOR_SKIP, "git is not in this image");
		return;
	}
	if (!tok || !*tok) {
		doctor_add(d, "github", DOCTOR_SKIP, "no GH_TOKEN: the host has no GitHub token");
		return;
	}
	doctor_start(d);
	/* GIT_TERMINAL_PROMPT is not set here: git would prompt on a terminal it has not got */
	int r = doctor_run(argv, "protocol=https\nhost=github.com\n\n", DOCTOR_TOOL_TIMEOUT_MS, out,
			   sizeof(out));
	const char *pw = strstr(out, "password=");
	char got[128];
	if (pw)
		doctor_first_line(pw + 9, got, sizeof(got));
	if (r == 0 && pw && streq(got, tok) && is_placeholder(got))
		doctor_add(d, "github", DOCTOR_PASS,
			   "git's credential for https://github.com is the GH_TOKEN placeholder");
	else
		doctor_add(d, "github", DOCTOR_FAIL,
			   "git's credential for https://github.com is %s",
			   pw ? "not the GH_TOKEN placeholder" : "missing");
}

void doctor_ai(struct doctor *d)
{
	const struct toml_value *a = doctor_providers(d);
	char out[DOCTOR_OUT_MAX], line[200], name[32];
	if (!d->image || toml_array_size(a) == 0) {
		doctor_add(d, "ai-clis", DOCTOR_SKIP, "no AI CLI in this image");
		return;
	}
	for (size_t i = 0; i < toml_array_size(a); i++) {
		const struct toml_value *p = toml_array_at(a, i);
		const char *cli;
		if (toml_get_string(toml_table_get(p, "cli"), &cli, NULL) < 0)
			continue;
		snprintf(name, sizeof(name), "cli:%.27s", cli);
		char *argv[] = { (char *)cli, "--version", NULL };
		doctor_start(d);
		int r = doctor_run(argv, NULL, DOCTOR_CLI_TIMEOUT_MS, out, sizeof(out));
		doctor_first_line(out, line, sizeof(line));
		if (r == 0)
			doctor_add(d, name, DOCTOR_PASS, "%s", line);
		else
			doctor_add(d, name, DOCTOR_FAIL, "%s --version: %s", cli,
				   r == -ENOENT	     ? "not found in PATH"
				   : r == -ETIMEDOUT ? "timed out after 60 s"
						     : line);
		check_cli_files(d, p, cli);
		check_cli_key(d, p, cli);
	}
	check_github(d);
}

/* ---- mcp ---- */

void doctor_mcp(struct doctor *d)
{
	static const char session[] =
		"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{"
		"\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},\"clientInfo\":{\"name\":"
		"\"capsem-doctor\",\"version\":\"1\"}}}\n"
		"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n"
		"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\"}\n";
	char out[16384], line[200];
	char *argv[] = { "capsem-mcp-relay", NULL };
	if (!doctor_in_path("capsem-mcp-relay")) {
		doctor_add(d, "mcp-relay", DOCTOR_SKIP, "capsem-mcp-relay is not in this image");
		return;
	}
	doctor_start(d);
	int r = doctor_run(argv, session, DOCTOR_TOOL_TIMEOUT_MS, out, sizeof(out));
	const char *list = strstr(out, "\"id\":2");
	if (r != 0 || !strstr(out, "\"serverInfo\"") || !list || !strstr(list, "\"tools\"")) {
		doctor_add(d, "mcp-relay", DOCTOR_FAIL, "%s",
			   r == -ETIMEDOUT ? "no answer from the gateway in 30 s"
					   : doctor_first_line(out, line, sizeof(line)));
		return;
	}
	size_t tools = 0;
	for (const char *p = strstr(list, "\"tools\""); p && (p = strstr(p, "\"name\"")); p++)
		tools++;
	doctor_add(d, "mcp-relay", DOCTOR_PASS,
		   "the relay initialized with the host's gateway; it lists %zu tools", tools);
}

/* ---- lifecycle ---- */

/* The hexadecimal mask on the "key:" line of /proc/1/status. */
static uint64_t status_mask(const char *status, const char *key)
{
	const char *p = strstr(status, key);
	uint64_t m = 0;
	if (!p)
		return 0;
	for (p += strlen(key); *p == ' ' || *p == '\t'; p++)
		;
	for (int i = 0; i < 16; i++, p++) {
		int v = *p >= '0' && *p <= '9'	 ? *p - '0'
			: *p >= 'a' && *p <= 'f' ? *p - 'a' + 10
						 : -1;
		if (v < 0)
			break;
		m = m << 4 | (uint64_t)v;
	}
	return m;
}

static void check_init(struct doctor *d)
{
	_cleanup_free_ char *st = NULL, *comm = NULL;
	if (read_file_small("/proc/1/status", 64 * 1024, &st, NULL) < 0 ||
	    read_file_small("/proc/1/comm", 256, &comm, NULL) < 0) {
		doctor_add(d, "init", DOCTOR_FAIL, "cannot read /proc/1/status");
		return;
	}
	comm[strcspn(comm, "\n")] = 0;
	/* busybox's convention: halt SIGUSR1, poweroff SIGUSR2, reboot SIGTERM; PID 1 takes them
	 * through a signalfd (blocked) or a handler (caught) */
	uint64_t m = status_mask(st, "SigBlk:") | status_mask(st, "SigCgt:");
	uint64_t want = (1ull << (SIGUSR1 - 1)) | (1ull << (SIGUSR2 - 1)) | (1ull << (SIGTERM - 1));
	if ((m & want) != want)
		doctor_add(d, "init", DOCTOR_FAIL,
			   "PID 1 (%s) does not take SIGUSR1/SIGUSR2/SIGTERM: halt, poweroff and "
			   "reboot would kill it",
			   comm);
	else
		doctor_add(d, "init", DOCTOR_PASS,
			   "PID 1 (%s) takes halt/poweroff/reboot (SIGUSR1/SIGUSR2/SIGTERM) into "
			   "its clean shutdown",
			   comm);
}

static void check_agent(struct doctor *d)
{
	DIR *dir = opendir("/proc");
	struct dirent *e;
	int found = 0;
	while (dir && !found && (e = readdir(dir))) {
		char path[300];
		_cleanup_free_ char *comm = NULL;
		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/comm", e->d_name);
		if (read_file_small(path, 256, &comm, NULL) == 0 &&
		    strncmp(comm, "capsem-agent", 12) == 0)
			found = 1;
	}
	if (dir)
		closedir(dir);
	doctor_add(d, "agent", found ? DOCTOR_PASS : DOCTOR_FAIL, "%s",
		   found ? "capsem-agent runs" : "no capsem-agent process");
}

static void check_clock(struct doctor *d)
{
	time_t now = time(NULL);
	struct tm tm;
	char buf[64];
	gmtime_r(&now, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm);
	if (tm.tm_year + 1900 < 2025)
		doctor_add(d, "clock", DOCTOR_FAIL, "the wall clock says %s: never set", buf);
	else
		doctor_add(d, "clock", DOCTOR_PASS, "the wall clock says %s (set by the host)",
			   buf);
}

void doctor_lifecycle(struct doctor *d)
{
	check_init(d);
	check_agent(d);
	check_clock(d);
}
