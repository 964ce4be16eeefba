/* netproxy.c - capsem-net-proxy: relay every outbound TCP connection of the guest to the host.
 *
 * capsem-init's nftables rules REDIRECT each TCP connection that does not stay on loopback to
 * 127.0.0.1:NETSETUP_NET_PORT, where this daemon accepts it (the listening socket is made by
 * capsem-init and inherited, so connections queue while we (re)start). For each connection, in
 * its own thread:
 *   1. the original destination: getsockopt(SO_ORIGINAL_DST) (conntrack's view before the
 *      redirect); a connection made straight to our port (destination 127/8) is refused;
 *   2. the owning process: the client's address and port (our peer) are looked up in
 *      /proc/net/tcp (then tcp6, for IPv4-mapped sockets) for the socket inode, then the
 *      links in /proc/<pid>/fd/ are searched for "socket:[inode]", bounded to
 *      NP_SCAN_MAX_PIDS processes and NP_SCAN_MAX_LINKS links; pid 0 and an empty comm when
 *      not found;
 *   3. a vsock connection to the host (CID 2, port PROTO_PORT_NET) and the preamble
 *      (proto_net_preamble_encode, docs/PROTOCOL.md §7);
 *   4. bytes both ways with no buffering beyond one read (TCP_NODELAY on the guest side), half-
 *      close aware: EOF from one side becomes shutdown(SHUT_WR) on the other once its bytes are
 *      written; both fds are closed when both directions are done. An error on either side
 *      resets the client (SO_LINGER 0) so it sees a failure, not a clean end.
 * A thread per connection keeps step 2's /proc scan from stalling other connections and keeps
 * each relay a plain poll(2) over two fds. At most NP_MAX_CONNS at once; past that a new
 * connection is reset at once. Each thread owns its two fds and closes them; nothing is shared
 * but an atomic counter.
 *
 * Trust boundary: none new. The client is any guest process; the host enforces policy on the
 * preamble's destination (pid and comm are attribution only: a root process in the guest can
 * forge them). Threads: the main thread accepts, one detached thread per connection.
 */
#include "netproxy.h"

#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include "fdutil.h"
#include "hostconn.h"
#include "log.h"
#include "macro.h"
#include "netsetup.h"
#include "parse.h"
#include "procnet.h"
#include "proto.h"

#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80 /* linux/netfilter_ipv4.h, which does not mix with libc headers */
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80 /* linux/netfilter_ipv6/ip6_tables.h */
#endif

#define NP_MAX_CONNS 1024u
#define NP_BUF (16u * 1024u)
#define NP_STACK (128u * 1024u)
#define NP_PROCNET_MAX (8u << 20) /* bytes of /proc/net/tcp read */
#define NP_SCAN_MAX_PIDS 4096u
#define NP_SCAN_MAX_LINKS 65536u

static atomic_uint np_active;

struct np_dir {
	int from, to;
	size_t off, len;
	int eof;  /* read side returned 0 */
	int shut; /* shutdown(to, SHUT_WR) done */
	uint8_t buf[NP_BUF];
};

struct np_conn {
	int tcp, vs;
	struct np_dir up, down; /* up: client -> host, down: host -> client */
};

/* Reset instead of FIN: the client sees ECONNRESET, not a clean end of stream. */
static void np_reset(int fd)
{
	struct linger l = { .l_onoff = 1, .l_linger = 0 };
	if (fd >= 0)
		(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

/* ---- who connected ---- */

static pid_t np_find_pid(uint64_t inode)
{
	DIR *proc = opendir("/proc");
	struct dirent *de;
	unsigned pids = 0, links = 0;
	pid_t self = getpid(), found = 0;

	if (!proc)
		return 0;
	while (!found && links < NP_SCAN_MAX_LINKS && (de = readdir(proc))) {
		uint32_t pid;
		char path[32];
		if (de->d_name[0] < '1' || de->d_name[0] > '9' || parse_u32(de->d_name, &pid) < 0)
			continue;
		if (++pids > NP_SCAN_MAX_PIDS)
			break;
		if ((pid_t)pid == self)
			continue;
		snprintf(path, sizeof(path), "%u/fd", pid);
		/* NOLINTNEXTLINE(clang-analyzer-unix.StdCLibraryFunctions): dirfd() of an open DIR does not fail */
		int dfd = openat(dirfd(proc), path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0)
			continue;
		DIR *fds = fdopendir(dfd);
		if (!fds) {
			safe_close(dfd);
			continue;
		}
		struct dirent *fe;
		while ((fe = readdir(fds))) {
			char link[64];
			uint64_t ino;
			if (fe->d_name[0] == '.')
				continue;
			if (++links > NP_SCAN_MAX_LINKS)
				break;
			ssize_t n =
				readlinkat(dfd, fe->d_name, link, sizeof(link)); /* dirfd(fds) */
			if (n > 0 && procnet_socket_inode(link, (size_t)n, &ino) == 0 &&
			    ino == inode) {
				found = (pid_t)pid;
				break;
			}
		}
		closedir(fds);
	}
	closedir(proc);
	return found;
}

static int np_inode_in(const char *path, int family, const uint8_t *addr, uint16_t port,
		       uint64_t *ret)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	if (read_file_small(path, NP_PROCNET_MAX, &text, &len) < 0)
		return -ENOENT;
	return procnet_find_inode(text, len, family, addr, port, ret);
}

/* The process that owns the client end of the connection whose peer we see. */
static void np_owner(const struct sockaddr_storage *peer, uint32_t *ret_pid, char *comm,
		     size_t comm_cap)
{
	uint8_t a[16] = { 0 };
	uint64_t inode = 0;
	uint16_t port;
	int r;

	*ret_pid = 0;
	comm[0] = 0;
	if (peer->ss_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)peer;
		port = ntohs(s->sin_port);
		memcpy(a, &s->sin_addr, 4);
		r = np_inode_in("/proc/net/tcp", AF_INET, a, port, &inode);
		if (r < 0) {
			/* an AF_INET6 socket connected to an IPv4 address: ::ffff:a.b.c.d */
			memmove(a + 12, a, 4);
			memset(a, 0, 10);
			a[10] = a[11] = 0xff;
			r = np_inode_in("/proc/net/tcp6", AF_INET6, a, port, &inode);
		}
	} else {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)peer;
		port = ntohs(s->sin6_port);
		memcpy(a, &s->sin6_addr, 16);
		r = np_inode_in("/proc/net/tcp6", AF_INET6, a, port, &inode);
	}
	if (r < 0)
		return;
	pid_t pid = np_find_pid(inode);
	if (pid <= 0)
		return;
	char path[64];
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	*ret_pid = (uint32_t)pid;
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	if (read_file_small(path, 64, &text, &len) == 0)
		procnet_comm_sanitize(text, len, comm, comm_cap);
}

/* The destination the client asked for, before the redirect. 0 or -errno (-EADDRNOTAVAIL for a
 * connection that was not redirected). */
static int np_original_dst(int fd, int family, struct proto_net_preamble *pre)
{
	if (family == AF_INET) {
		struct sockaddr_in d;
		socklen_t len = sizeof(d);
		if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &d, &len) < 0)
			return negative_errno();
		pre->family = AF_INET;
		memcpy(pre->addr, &d.sin_addr, 4);
		pre->port = ntohs(d.sin_port);
		if (pre->addr[0] == 127)
			return -EADDRNOTAVAIL;
	} else {
		struct sockaddr_in6 d;
		socklen_t len = sizeof(d);
		if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &d, &len) < 0)
			return negative_errno();
		pre->family = AF_INET6;
		memcpy(pre->addr, &d.sin6_addr, 16);
		pre->port = ntohs(d.sin6_port);
		if (IN6_IS_ADDR_LOOPBACK(&d.sin6_addr))
			return -EADDRNOTAVAIL;
	}
	return pre->port ? 0 : -EADDRNOTAVAIL;
}

static int np_connect_host(void)
{
	union hostconn_addr sa;
	socklen_t len;
	hostconn_addr(PROTO_PORT_NET, &sa, &len);
	_cleanup_close_ int fd = socket(sa.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return negative_errno();
	if (connect(fd, &sa.sa, len) < 0)
		return negative_errno();
	return TAKE_FD(fd);
}

/* ---- relay ---- */

/* Move what one direction can move now. 0, or -errno on a hard error. */
static int np_pump(struct np_dir *d, short from_ev, short to_ev)
{
	if (d->len == 0 && !d->eof && (from_ev & (POLLIN | POLLHUP | POLLERR))) {
		ssize_t n = read(d->from, d->buf, sizeof(d->buf));
		if (n > 0) {
			d->off = 0;
			d->len = (size_t)n;
			to_ev |= POLLOUT; /* try at once: no extra poll round per chunk */
		} else if (n == 0) {
			d->eof = 1;
		} else if (errno != EAGAIN && errno != EINTR) {
			return negative_errno();
		}
	}
	while (d->len > 0 && (to_ev & (POLLOUT | POLLERR | POLLHUP))) {
		ssize_t n = send(d->to, d->buf + d->off, d->len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			return negative_errno();
		}
		d->off += (size_t)n;
		d->len -= (size_t)n;
	}
	if (d->eof && d->len == 0 && !d->shut) {
		(void)shutdown(d->to, SHUT_WR);
		d->shut = 1;
	}
	return 0;
}

static short np_want_read(const struct np_dir *d)
{
	return d->len == 0 && !d->eof ? POLLIN : 0;
}

static short np_want_write(const struct np_dir *d)
{
	return d->len > 0 ? POLLOUT : 0;
}

static int np_relay(struct np_conn *c)
{
	c->up = (struct np_dir){ .from = c->tcp, .to = c->vs };
	c->down = (struct np_dir){ .from = c->vs, .to = c->tcp };
	if (fd_set_nonblock(c->tcp, 1) < 0 || fd_set_nonblock(c->vs, 1) < 0)
		return -EIO;
	while (!(c->up.shut && c->down.shut)) {
		short tev = np_want_read(&c->up) | np_want_write(&c->down);
		short vev = np_want_read(&c->down) | np_want_write(&c->up);
		struct pollfd p[2] = {
			{ .fd = tev ? c->tcp : -1, .events = tev },
			{ .fd = vev ? c->vs : -1, .events = vev },
		};
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return negative_errno();
		}
		int r = np_pump(&c->up, p[0].revents, p[1].revents);
		if (r == 0)
			r = np_pump(&c->down, p[1].revents, p[0].revents);
		if (r < 0)
			return r;
	}
	return 0;
}

static void *np_thread(void *arg)
{
	struct np_conn *c = arg;
	struct proto_net_preamble pre = { 0 };
	struct sockaddr_storage peer = { 0 };
	socklen_t plen = sizeof(peer);
	uint8_t wire[PROTO_NET_PREAMBLE_MAX];
	ssize_t k;
	int one = 1, r;

	c->vs = -1;
	if (getpeername(c->tcp, (struct sockaddr *)&peer, &plen) < 0 ||
	    (peer.ss_family != AF_INET && peer.ss_family != AF_INET6)) {
		np_reset(c->tcp);
		goto out;
	}
	r = np_original_dst(c->tcp, peer.ss_family, &pre);
	if (r < 0) {
		log_debug_errno(r, "no original destination: refusing the connection");
		np_reset(c->tcp);
		goto out;
	}
	(void)setsockopt(c->tcp, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	np_owner(&peer, &pre.pid, pre.comm, sizeof(pre.comm));
	k = proto_net_preamble_encode(&pre, wire, sizeof(wire));
	c->vs = k > 0 ? np_connect_host() : (int)k;
	if (c->vs < 0) {
		log_debug_errno(c->vs, "cannot reach the host's net proxy (vsock port %u)",
				PROTO_PORT_NET);
		c->vs = -1;
		np_reset(c->tcp);
		goto out;
	}
	if (fd_write_all(c->vs, wire, (size_t)k) < 0 || np_relay(c) < 0)
		np_reset(c->tcp);
out:
	safe_close(c->tcp);
	safe_close(c->vs);
	free(c);
	atomic_fetch_sub(&np_active, 1);
	return NULL;
}

static void np_accept(int lfd, const pthread_attr_t *attr)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				log_warn_errno(negative_errno(), "accept");
			return;
		}
		struct np_conn *c = NULL;
		pthread_t t;
		if (atomic_load(&np_active) >= NP_MAX_CONNS || !(c = malloc(sizeof(*c)))) {
			np_reset(fd);
			safe_close(fd);
			continue;
		}
		c->tcp = fd;
		atomic_fetch_add(&np_active, 1);
		int r = pthread_create(&t, attr, np_thread, c);
		if (r != 0) {
			atomic_fetch_sub(&np_active, 1);
			np_reset(fd);
			safe_close(fd);
			free(c);
		}
	}
}

int netproxy_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen-fd", required_argument, NULL, 'f' },
		{ "port", required_argument, NULL, 'p' },
		{ "debug", no_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct sigaction ign = { .sa_handler = SIG_IGN };
	pthread_attr_t attr;
	uint32_t v, port = NETSETUP_NET_PORT;
	int lfd = -1, c, r;

	(void)prctl(PR_SET_NAME, "capsem-net-prox", 0, 0, 0);
	log_setup("capsem-net-proxy", LOG_LVL_INFO);
	log_setup_from_env();
	while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
		switch (c) {
		case 'f':
			if (parse_u32(optarg, &v) < 0 || v < 3 || v > 1024)
				return log_error("bad --listen-fd %s", optarg), 2;
			lfd = (int)v;
			break;
		case 'p':
			if (parse_u32(optarg, &v) < 0 || v == 0 || v > 65535)
				return log_error("bad --port %s", optarg), 2;
			port = v;
			break;
		case 'd':
			log_setup("capsem-net-proxy", LOG_LVL_DEBUG);
			break;
		case 'h':
			printf("usage: capsem-net-proxy [--listen-fd N | --port P] [--debug]\n"
			       "  (default: listen on 127.0.0.1:%u)\n",
			       NETSETUP_NET_PORT);
			return 0;
		default:
			return 2;
		}
	}
	if (optind != argc)
		return log_error("unexpected argument %s", argv[optind]), 2;
	(void)sigaction(SIGPIPE, &ign, NULL);
	if (lfd < 0) {
		r = netsetup_listen(SOCK_STREAM, (uint16_t)port, &lfd);
		if (r < 0)
			return log_error_errno(r, "cannot listen on 127.0.0.1:%u", port), 1;
	}
	(void)fd_set_cloexec(lfd, 1);
	if (fd_set_nonblock(lfd, 1) < 0)
		return log_error_errno(negative_errno(), "listening socket"), 1;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, NP_STACK);
	log_debug("relaying TCP to vsock port %u", PROTO_PORT_NET);
	for (;;) {
		struct pollfd p = { .fd = lfd, .events = POLLIN };
		if (poll(&p, 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			return log_error_errno(negative_errno(), "poll"), 1;
		}
		if (p.revents & (POLLERR | POLLNVAL))
			return log_error("the listening socket failed"), 1;
		np_accept(lfd, &attr);
	}
}
