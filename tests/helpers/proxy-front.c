/* proxy-front.c - the egress proxy on a TCP port, for benchmarks (bench/bench_proxy.py).
 *
 * A guest's connection reaches the proxy as a Unix stream from the vsock backend with a preamble
 * naming its destination. HTTP load generators (wrk, curl) cannot write that preamble, so this
 * front end accepts plain TCP connections and hands each to the same proxy_accept() with the
 * preamble filled in: destination NAME:PORT (a fake address from the same map the DNS server
 * uses). Everything after that is the production path: policy, TLS termination with the CA in
 * $CAPSEM_HOME/ca, HTTP parsing, the upstream pool, upstream TLS verification (the policy's
 * [upstream] ca_file and [[upstream.override]] point it at the benchmark's upstream).
 *
 *   proxy-front --listen 127.0.0.1:PORT --name localhost [--port 443] --dns-socket PATH
 *
 * The egress service runs whole (egress_start): its DNS server listens on --dns-socket (the
 * benchmark measures it there) and its proxy socket next to it.
 * Keys go through the key broker as in capsem-vm: `proxy-front --keyd ...` is the broker's
 * process (keydmain.c), started here with the same confinement.
 * Prints "ready" on stdout once listening; runs until SIGTERM/SIGINT. Not installed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "confine.h"
#include "credentials.h"
#include "egress.h"
#include "fakeip.h"
#include "keydmain.h"
#include "parse.h"
#include "policy.h"
#include "vmseccomp.h"

static struct proxy *proxy;
static struct proto_net_preamble pre;
static int lfd = -1;

static void on_listen(uv_poll_t *h, int status, int events)
{
	int fd;
	while ((fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0) {
		int one = 1;
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		(void)proxy_accept(proxy, fd, &pre);
	}
}

static void on_signal(uv_signal_t *s, int signum)
{
	uv_stop(s->loop);
}

/* The key broker, as capsem-vm starts it (vmkeyd.c): its control socket, or -1. */
static int start_keyd(const char *home)
{
	char *self = realpath("/proc/self/exe", NULL);
	int sv[2], pidfd = -1;
	pid_t pid;
	if (!self || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		free(self);
		return -1;
	}
	char *argv[] = { self, (char *)"--keyd", (char *)home, (char *)POLICY_CORP_PATH, NULL };
	struct confine_opts co = { .flags = CONFINE_NO_NEW_PRIVS, .landlock_fd = -1 };
	int r = confine_spawn(argv, STDERR_FILENO, sv[1], &co, &pid, &pidfd);
	close(sv[1]);
	free(self);
	cred_env_scrub();
	if (r < 0) {
		close(sv[0]);
		return -1;
	}
	return sv[0];
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "--keyd") == 0)
		return keyd_process_main(argc, argv);
	const char *listen_at = "127.0.0.1:0", *name = "localhost", *dns_socket = NULL;
	uint32_t port = 443;
	static const struct option opts[] = { { "listen", required_argument, NULL, 'l' },
					      { "name", required_argument, NULL, 'n' },
					      { "port", required_argument, NULL, 'p' },
					      { "dns-socket", required_argument, NULL, 'd' },
					      { "seccomp", no_argument, NULL, 's' },
					      {} };
	int seccomp = 0;
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			listen_at = optarg;
			break;
		case 'n':
			name = optarg;
			break;
		case 'p':
			if (parse_u32(optarg, &port) < 0 || port == 0 || port > 65535)
				return 2;
			break;
		case 'd':
			dns_socket = optarg;
			break;
		case 's':
			seccomp = 1; /* capsem-vm's filter, as the proxy has inside capsem-vm */
			break;
		default:
			fprintf(stderr,
				"usage: proxy-front --listen IP:PORT --name NAME [--port N]\n");
			return 2;
		}
	}
	const char *home = getenv("CAPSEM_HOME");
	if (!home || !dns_socket) {
		fprintf(stderr, "proxy-front: set CAPSEM_HOME (policy, CA) and --dns-socket\n");
		return 2;
	}
	struct sigaction ign = { .sa_handler = SIG_IGN }; /* as capsem-vm: EPIPE, not SIGPIPE */
	sigaction(SIGPIPE, &ign, NULL);
	uv_loop_t *loop = uv_default_loop();
	char proxy_socket[4096], err[512];
	snprintf(proxy_socket, sizeof(proxy_socket), "%s.proxy", dns_socket);
	struct egress_config ec = { .loop = loop,
				    .capsem_home = home,
				    .proxy_socket = proxy_socket,
				    .dns_socket = dns_socket,
				    .keyd_ctl = start_keyd(home) };
	if (ec.keyd_ctl < 0) {
		fprintf(stderr, "proxy-front: cannot start the key broker\n");
		return 1;
	}
	struct egress *e;
	if (egress_start(&ec, &e, err, sizeof(err)) < 0) {
		fprintf(stderr, "proxy-front: %s\n", err);
		return 1;
	}
	if (seccomp &&
	    (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || vm_seccomp_install(SCF_ENFORCE) < 0)) {
		fprintf(stderr, "proxy-front: cannot install the seccomp filter\n");
		return 1;
	}
	proxy = egress_proxy(e);
	uint32_t addr;
	if (fakeip_assign(egress_fakeip(e), name, &addr) < 0) {
		fprintf(stderr, "proxy-front: cannot map %s\n", name);
		return 1;
	}
	pre.family = AF_INET;
	uint32_t be = htonl(addr);
	memcpy(pre.addr, &be, 4);
	pre.port = (uint16_t)port;
	snprintf(pre.comm, sizeof(pre.comm), "bench");

	char host[64];
	const char *colon = strrchr(listen_at, ':');
	if (!colon || (size_t)(colon - listen_at) >= sizeof(host))
		return 2;
	memcpy(host, listen_at, (size_t)(colon - listen_at));
	host[colon - listen_at] = 0;
	uint32_t lport;
	if (parse_u32(colon + 1, &lport) < 0 || lport > 65535)
		return 2;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)lport) };
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return 2;
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int one = 1;
	(void)setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 1024) < 0) {
		perror("proxy-front: listen");
		return 1;
	}
	socklen_t sl = sizeof(sa);
	getsockname(lfd, (struct sockaddr *)&sa, &sl);
	uv_poll_t lp;
	uv_signal_t s1, s2;
	uv_poll_init(loop, &lp, lfd);
	uv_poll_start(&lp, UV_READABLE, on_listen);
	uv_signal_init(loop, &s1);
	uv_signal_start(&s1, on_signal, SIGTERM);
	uv_signal_init(loop, &s2);
	uv_signal_start(&s2, on_signal, SIGINT);
	printf("ready %u\n", ntohs(sa.sin_port));
	fflush(stdout);
	uv_run(loop, UV_RUN_DEFAULT);
	egress_stop(e);
	return 0;
}
