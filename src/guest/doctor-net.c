/* doctor-net.c - capsem-doctor's "network" group: the egress path, layer by layer, from the
 * inside. Each layer is checked by what a guest process sees:
 *
 *   nics         no network interface but lo and the dummy capsem0 (no NIC reaches the host)
 *   net-ipv6     no IPv6 address but loopback's (IPv6 stays for ::1 only)
 *   net-route    every route goes into capsem0 or lo: no packet can leave but through the
 *                proxies, which relay over vsock
 *   net-proxies  capsem-net-proxy and capsem-dns-proxy listen on 127.0.0.1
 *   net-dns-deny a name outside the policy gets no address (the DNS proxy answers NXDOMAIN)
 *   net-dns-allow   an allowed provider host of the image resolves (to the host's fake address)
 *   net-redirect a TCP connection to that address is accepted (nftables sent it to the proxy:
 *                nothing else routes)
 *   net-tls      TLS to that host verifies with the system trust store and the certificate is
 *                issued by the Capsem CA (the host's proxy terminates TLS)
 *   net-http     on that connection, a request for another Host gets the proxy's 403 (the
 *                proxy reads HTTP and denies what the policy does not allow)
 *   net-direct   TCP to an address Capsem's DNS never handed out is closed by the proxy without
 *                an answer (no way around the policy by IP)
 *   ca-curl, ca-python, ca-node   the Capsem CA is in the trust store each client uses
 * The layers after net-route are skipped when the host configured no egress (no
 * /etc/capsem/ca.pem); the allowed-host layers when the image names no provider host.
 *
 * Trust boundary: none new (doctor.c). Single-threaded; every connection has a timeout.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "doctor-int.h"
#include "doctor.h"
#include "fdutil.h"
#include "netsetup.h"

#define NET_TIMEOUT_MS 20000
#define DENIED_NAME "capsem-doctor.invalid"
#define DIRECT_IP "192.0.2.1" /* TEST-NET-1 (RFC 5737): never handed out by Capsem's DNS */

struct net {
	char name[256]; /* an allowed host of the image's providers */
	char ip[INET_ADDRSTRLEN];
};

static void check_nics(struct doctor *d)
{
	DIR *dir = opendir("/sys/class/net");
	struct dirent *e;
	char bad[160] = "", seen[160] = "";
	if (!dir) {
		doctor_add(d, "nics", DOCTOR_FAIL, "cannot list /sys/class/net: %s",
			   strerror(errno));
		return;
	}
	while ((e = readdir(dir))) {
		if (e->d_name[0] == '.')
			continue;
		int ok = streq(e->d_name, "lo") || streq(e->d_name, NETSETUP_IFNAME);
		char *dst = ok ? seen : bad;
		size_t l = strlen(dst);
		if (l + strlen(e->d_name) + 2 < 160)
			snprintf(dst + l, 160 - l, "%s%.40s", l ? " " : "", e->d_name);
	}
	closedir(dir);
	if (bad[0])
		doctor_add(d, "nics", DOCTOR_FAIL,
			   "unexpected interfaces: %s (only lo and " NETSETUP_IFNAME " allowed)",
			   bad);
	else
		doctor_add(d, "nics", DOCTOR_PASS, "interfaces: %s", seen[0] ? seen : "(none)");
}

static void check_ipv6(struct doctor *d)
{
	_cleanup_free_ char *text = NULL;
	char bad[128] = "";
	if (read_file_small("/proc/net/if_inet6", 64 * 1024, &text, NULL) < 0) {
		doctor_add(d, "net-ipv6", DOCTOR_PASS, "no IPv6 stack");
		return;
	}
	/* "addr ifindex plen scope flags name" */
	for (char *l = text; l && *l;) {
		char *nl = strchr(l, '\n');
		if (nl)
			*nl = 0;
		char *name = strrchr(l, ' ');
		if (name && !streq(name + 1, "lo") && strlen(bad) + strlen(name) + 1 < sizeof(bad))
			snprintf(bad + strlen(bad), sizeof(bad) - strlen(bad), "%s%s",
				 bad[0] ? " " : "", name + 1);
		l = nl ? nl + 1 : NULL;
	}
	if (bad[0])
		doctor_add(d, "net-ipv6", DOCTOR_FAIL, "IPv6 addresses on %s", bad);
	else
		doctor_add(d, "net-ipv6", DOCTOR_PASS, "IPv6 only on lo (::1)");
}

static void check_routes(struct doctor *d)
{
	_cleanup_free_ char *routes = NULL;
	char bad[128] = "";
	if (read_file_small("/proc/net/route", 1u << 20, &routes, NULL) < 0) {
		doctor_add(d, "net-route", DOCTOR_FAIL, "cannot read /proc/net/route");
		return;
	}
	char *line = strchr(routes, '\n');
	while (line && line[1]) {
		line++;
		size_t l = strcspn(line, "\t ");
		if (l &&
		    !(l == strlen(NETSETUP_IFNAME) && strncmp(line, NETSETUP_IFNAME, l) == 0) &&
		    !(l == 2 && strncmp(line, "lo", 2) == 0) && strlen(bad) + l + 2 < sizeof(bad))
			snprintf(bad + strlen(bad), sizeof(bad) - strlen(bad), "%s%.*s",
				 bad[0] ? " " : "", (int)l, line);
		line = strchr(line, '\n');
	}
	if (bad[0])
		doctor_add(d, "net-route", DOCTOR_FAIL, "routes through other interfaces: %s", bad);
	else
		doctor_add(d, "net-route", DOCTOR_PASS,
			   "every route goes into " NETSETUP_IFNAME " or lo");
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

static void check_proxies(struct doctor *d)
{
	if (!listening_local(NETSETUP_NET_PORT) || !listening_local(NETSETUP_DNS_PORT))
		doctor_add(d, "net-proxies", DOCTOR_FAIL,
			   "the net/DNS proxies are not listening on 127.0.0.1:%u/%u",
			   NETSETUP_NET_PORT, NETSETUP_DNS_PORT);
	else
		doctor_add(d, "net-proxies", DOCTOR_PASS,
			   "the net and DNS proxies listen on 127.0.0.1:%u and :%u",
			   NETSETUP_NET_PORT, NETSETUP_DNS_PORT);
}

/* getaddrinfo for an IPv4 address: 0 and the address, or the EAI_ code (negative). */
static int resolve4(const char *name, char *ip, size_t n)
{
	struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *res = NULL;
	int r = getaddrinfo(name, NULL, &hints, &res);
	if (r != 0)
		return r < 0 ? r : -r;
	const struct sockaddr_in *sin = (const struct sockaddr_in *)res->ai_addr;
	if (!inet_ntop(AF_INET, &sin->sin_addr, ip, (socklen_t)n))
		r = EAI_FAIL;
	freeaddrinfo(res);
	return r;
}

static void check_dns_deny(struct doctor *d)
{
	char ip[INET_ADDRSTRLEN];
	doctor_start(d);
	int r = resolve4(DENIED_NAME, ip, sizeof(ip));
	if (r == 0)
		doctor_add(d, "net-dns-deny", DOCTOR_FAIL, DENIED_NAME " resolved to %s", ip);
	else if (r == EAI_NONAME || r == EAI_NODATA)
		doctor_add(d, "net-dns-deny", DOCTOR_PASS,
			   DENIED_NAME " (outside the policy) has no address: %s", gai_strerror(r));
	else
		doctor_add(d, "net-dns-deny", DOCTOR_FAIL,
			   "the DNS proxy did not answer for " DENIED_NAME ": %s", gai_strerror(r));
}

/* The first host of the image's providers' `domains` (image.toml). */
static int allowed_name(const struct doctor *d, char *name, size_t n)
{
	const struct toml_value *a = doctor_providers(d);
	for (size_t i = 0; i < toml_array_size(a); i++) {
		const struct toml_value *dom = toml_table_get(toml_array_at(a, i), "domains");
		const char *s;
		if (toml_array_size(dom) > 0 &&
		    toml_get_string(toml_array_at(dom, 0), &s, NULL) == 0) {
			snprintf(name, n, "%s", s);
			return 1;
		}
	}
	return 0;
}

static int check_dns_allow(struct doctor *d, struct net *nt)
{
	if (!allowed_name(d, nt->name, sizeof(nt->name))) {
		doctor_add(d, "net-dns-allow", DOCTOR_SKIP, "the image names no provider host");
		return -ENOENT;
	}
	doctor_start(d);
	int r = resolve4(nt->name, nt->ip, sizeof(nt->ip));
	if (r != 0) {
		doctor_add(d, "net-dns-allow", DOCTOR_FAIL,
			   "%s (a provider host of this image) does not resolve: %s (is it denied "
			   "by the policy?)",
			   nt->name, gai_strerror(r));
		return -EIO;
	}
	doctor_add(d, "net-dns-allow", DOCTOR_PASS, "%s resolves to %s", nt->name, nt->ip);
	return 0;
}

/* A TCP connection to ip:port within the timeout: the fd, or -errno. */
static int connect_to(const char *ip, unsigned port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1)
		return -EINVAL;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return negative_errno();
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
		int r = negative_errno();
		close(fd);
		return r;
	}
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	int err = 0;
	socklen_t l = sizeof(err);
	int pr = poll(&p, 1, NET_TIMEOUT_MS);
	if (pr <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0 || err) {
		close(fd);
		return pr == 0 ? -ETIMEDOUT : -(err ? err : EIO);
	}
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		(void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	return fd;
}

static void check_redirect(struct doctor *d, const struct net *nt)
{
	doctor_start(d);
	int fd = connect_to(nt->ip, 443);
	if (fd < 0) {
		doctor_add(d, "net-redirect", DOCTOR_FAIL, "TCP to %s:443 (%s): %s", nt->ip,
			   nt->name, strerror(-fd));
		return;
	}
	close(fd);
	doctor_add(d, "net-redirect", DOCTOR_PASS,
		   "TCP to %s:443 (%s) is accepted: nftables hands it to the proxy", nt->ip,
		   nt->name);
}

static void check_direct(struct doctor *d)
{
	char buf[64];
	doctor_start(d);
	_cleanup_close_ int fd = connect_to(DIRECT_IP, 443);
	if (fd < 0) {
		doctor_add(d, "net-direct", DOCTOR_PASS, "TCP to " DIRECT_IP ":443 fails: %s",
			   strerror(-fd));
		return;
	}
	struct timeval tv = { .tv_sec = NET_TIMEOUT_MS / 1000 };
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	(void)!write(fd, "\x16\x03\x01", 3); /* a TLS record's start: the proxy must not wait */
	ssize_t k = read(fd, buf, sizeof(buf));
	if (k == 0 || (k < 0 && errno == ECONNRESET))
		doctor_add(d, "net-direct", DOCTOR_PASS,
			   "TCP to " DIRECT_IP
			   ":443 (an address not from Capsem's DNS) is closed by "
			   "the proxy unanswered");
	else
		doctor_add(d, "net-direct", DOCTOR_FAIL, "TCP to " DIRECT_IP ":443 %s",
			   k > 0 ? "was answered: something beyond the proxy is reachable"
				 : "was neither answered nor closed in 20 s");
}

/* TLS with python3's default context (the system trust store): the issuer's organisation,
 * then the status line of a request for a foreign Host on the same connection. */
static const char tls_script[] =
	"import socket,ssl,sys\n"
	"n,ip=sys.argv[1],sys.argv[2]\n"
	"s=ssl.create_default_context().wrap_socket(socket.create_connection((ip,443),timeout=20),"
	"server_hostname=n)\n"
	"i=dict(x[0] for x in s.getpeercert()['issuer'])\n"
	"print('issuer:',i.get('organizationName',''),'|',i.get('commonName',''))\n"
	"s.sendall(b'GET /capsem-doctor HTTP/1.1\\r\\nHost: " DENIED_NAME
	"\\r\\nConnection: close\\r\\n\\r\\n')\n"
	"print('status:',s.recv(4096).split(b'\\r\\n')[0].decode('latin-1'))\n";

static void check_tls_http(struct doctor *d, const struct net *nt)
{
	char out[DOCTOR_OUT_MAX], line[200];
	char *argv[] = {
		"python3", "-c", (char *)tls_script, (char *)nt->name, (char *)nt->ip, NULL
	};
	doctor_start(d);
	int r = doctor_run(argv, NULL, DOCTOR_TOOL_TIMEOUT_MS, out, sizeof(out));
	if (r == -ENOENT) {
		doctor_add(d, "net-tls", DOCTOR_SKIP, "python3 is not in this image");
		doctor_add(d, "net-http", DOCTOR_SKIP, "python3 is not in this image");
		return;
	}
	const char *iss = strstr(out, "issuer: "), *st = strstr(out, "status: ");
	char issuer[160] = "", status[160] = "";
	if (iss)
		doctor_first_line(iss + 8, issuer, sizeof(issuer));
	if (st)
		doctor_first_line(st + 8, status, sizeof(status));
	if (!iss) {
		/* a traceback ends with the error */
		size_t l = strlen(out);
		while (l > 0 && (out[l - 1] == '\n' || out[l - 1] == ' '))
			out[--l] = 0;
		const char *last = strrchr(out, '\n');
		doctor_add(d, "net-tls", DOCTOR_FAIL, "TLS to %s: %s", nt->name,
			   r == -ETIMEDOUT
				   ? "timed out"
				   : doctor_first_line(last ? last + 1 : out, line, sizeof(line)));
		doctor_add(d, "net-http", DOCTOR_SKIP, "no TLS connection to ask over");
		return;
	}
	if (strncmp(issuer, "Capsem |", 8) != 0)
		doctor_add(d, "net-tls", DOCTOR_FAIL,
			   "%s's certificate is issued by %s, not Capsem", nt->name, issuer);
	else
		doctor_add(d, "net-tls", DOCTOR_PASS,
			   "%s verifies with the system store, issued by %s", nt->name, issuer + 9);
	if (r == 0 && strncmp(status, "HTTP/1.1 403", 12) == 0)
		doctor_add(d, "net-http", DOCTOR_PASS,
			   "a request to %s for Host " DENIED_NAME " is denied by the proxy: %s",
			   nt->name, status);
	else
		doctor_add(d, "net-http", DOCTOR_FAIL,
			   "a request to %s for Host " DENIED_NAME " was not denied: %s", nt->name,
			   status[0] ? status : "no answer");
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
	char out[DOCTOR_OUT_MAX], line[256];
	if (read_file_small(DOCTOR_CA_PEM, 64 * 1024, &ca, NULL) < 0) {
		doctor_add(d, "ca-curl", DOCTOR_FAIL, "cannot read " DOCTOR_CA_PEM);
		return;
	}
	/* curl (OpenSSL): CURL_CA_BUNDLE, SSL_CERT_FILE, else Debian's bundle */
	const char *cb = getenv("CURL_CA_BUNDLE");
	if (!cb || !*cb)
		cb = getenv("SSL_CERT_FILE");
	if (!cb || !*cb)
		cb = "/etc/ssl/certs/ca-certificates.crt";
	if (!doctor_in_path("curl"))
		doctor_add(d, "ca-curl", DOCTOR_SKIP, "curl is not in this image");
	else
		doctor_add(d, "ca-curl", file_has_ca(cb, ca) ? DOCTOR_PASS : DOCTOR_FAIL,
			   "%s %s the Capsem CA", cb, file_has_ca(cb, ca) ? "holds" : "lacks");
	/* python: the file its default context loads */
	char *py[] = { "python3", "-c",
		       "import ssl,os;p=ssl.get_default_verify_paths();"
		       "print(os.environ.get('SSL_CERT_FILE') or p.cafile or p.openssl_cafile)",
		       NULL };
	doctor_start(d);
	int r = doctor_run(py, NULL, DOCTOR_TOOL_TIMEOUT_MS, out, sizeof(out));
	if (r == -ENOENT)
		doctor_add(d, "ca-python", DOCTOR_SKIP, "python3 is not in this image");
	else if (r != 0)
		doctor_add(d, "ca-python", DOCTOR_FAIL, "python3 failed: %s",
			   doctor_first_line(out, line, 200));
	else {
		doctor_first_line(out, line, sizeof(line));
		int ok = file_has_ca(line, ca);
		doctor_add(d, "ca-python", ok ? DOCTOR_PASS : DOCTOR_FAIL, "%s %s the Capsem CA",
			   line, ok ? "holds" : "lacks");
	}
	/* node: NODE_EXTRA_CA_CERTS (node does not read the system store by default) */
	const char *nx = getenv("NODE_EXTRA_CA_CERTS");
	if (!doctor_in_path("node"))
		doctor_add(d, "ca-node", DOCTOR_SKIP, "node is not in this image");
	else if (!nx || !*nx)
		doctor_add(d, "ca-node", DOCTOR_FAIL, "NODE_EXTRA_CA_CERTS is not set");
	else
		doctor_add(d, "ca-node", file_has_ca(nx, ca) ? DOCTOR_PASS : DOCTOR_FAIL,
			   "NODE_EXTRA_CA_CERTS=%s %s the Capsem CA", nx,
			   file_has_ca(nx, ca) ? "holds" : "lacks");
}

void doctor_network(struct doctor *d)
{
	struct net nt = { 0 };
	check_nics(d);
	check_ipv6(d);
	check_routes(d);
	if (!d->egress) {
		doctor_add(d, "net-proxies", DOCTOR_SKIP,
			   "egress not configured (no " DOCTOR_CA_PEM ")");
		return;
	}
	check_proxies(d);
	check_dns_deny(d);
	if (check_dns_allow(d, &nt) == 0) {
		check_redirect(d, &nt);
		check_tls_http(d, &nt);
	}
	check_direct(d);
	check_ca(d);
}
