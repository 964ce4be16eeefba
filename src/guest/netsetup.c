/* netsetup.c - capsem0, the egress ruleset, the proxies' sockets, resolv.conf and hosts.
 *
 * capsem0 is made over rtnetlink (one NETLINK_ROUTE socket, one request at a time, each
 * acknowledged): RTM_NEWLINK renames the kernel's own dummy0 (or creates a link of kind
 * "dummy"), IPv6 is switched off on it through /proc/sys/net/ipv6/conf/capsem0/disable_ipv6
 * before it comes up (no link-local address, no route; so is conf/default, for any link made
 * later), RTM_NEWADDR NETSETUP_ADDR4/32,
 * RTM_NEWLINK IFF_UP, RTM_NEWROUTE 0.0.0.0/0 dev capsem0 (scope link, preferred source
 * NETSETUP_ADDR4). The ruleset is loaded by Debian's nft from the initramfs (the only
 * dynamically linked program there), run without a shell.
 *
 * Trust boundary: none crossed; kernel replies are read with their lengths checked. Runs in
 * capsem-init (PID 1, single thread); netsetup_write_hosts also in capsem-agent.
 */
#include "netsetup.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fdutil.h"
#include "macro.h"

/* Every TCP connection that leaves through capsem0 goes to capsem-net-proxy, DNS to
 * capsem-dns-proxy; loopback is left alone; the rest is rejected at once (a TCP reset, or an ICMP
 * "administratively prohibited" that makes send() fail with EPERM right away). The filter chain
 * runs after NAT (priority 0 > -100), so redirected packets are recognised by their conntrack
 * state rather than by address. The %u are the DNS port (twice) and the net-proxy's port. */
static const char netsetup_rules_fmt[] = "flush ruleset\n"
					 "table inet capsem {\n"
					 "\tchain egress_nat {\n"
					 "\t\ttype nat hook output priority -100; policy accept;\n"
					 "\t\toif \"lo\" accept\n"
					 "\t\tmeta nfproto ipv4 udp dport 53 redirect to :%u\n"
					 "\t\tmeta nfproto ipv4 tcp dport 53 redirect to :%u\n"
					 "\t\tmeta nfproto ipv4 meta l4proto tcp redirect to :%u\n"
					 "\t}\n"
					 "\tchain egress_filter {\n"
					 "\t\ttype filter hook output priority 0; policy accept;\n"
					 "\t\toif \"lo\" accept\n"
					 "\t\tct status dnat accept\n"
					 "\t\tmeta l4proto tcp reject with tcp reset\n"
					 "\t\treject with icmpx admin-prohibited\n"
					 "\t}\n"
					 "}\n";

const char *netsetup_ruleset(void)
{
	static char rules[sizeof(netsetup_rules_fmt) + 16];
	if (!rules[0])
		snprintf(rules, sizeof(rules), netsetup_rules_fmt, NETSETUP_DNS_PORT,
			 NETSETUP_DNS_PORT, NETSETUP_NET_PORT);
	return rules;
}

/* ---- rtnetlink ---- */

struct nlreq {
	struct nlmsghdr h;
	uint8_t body[512];
};

static void *nl_tail(struct nlreq *r)
{
	return (uint8_t *)&r->h + NLMSG_ALIGN(r->h.nlmsg_len);
}

static int nl_attr(struct nlreq *r, unsigned short type, const void *data, size_t len)
{
	size_t need = RTA_LENGTH(len);
	if (NLMSG_ALIGN(r->h.nlmsg_len) + RTA_ALIGN(need) > sizeof(*r))
		return -ENOBUFS;
	struct rtattr *a = nl_tail(r);
	a->rta_type = type;
	a->rta_len = (unsigned short)need;
	if (len)
		memcpy(RTA_DATA(a), data, len);
	r->h.nlmsg_len = (uint32_t)(NLMSG_ALIGN(r->h.nlmsg_len) + RTA_ALIGN(need));
	return 0;
}

static struct rtattr *nl_nest_begin(struct nlreq *r, unsigned short type)
{
	struct rtattr *a = nl_tail(r);
	return nl_attr(r, type, NULL, 0) < 0 ? NULL : a;
}

static void nl_nest_end(struct nlreq *r, struct rtattr *a)
{
	a->rta_len = (unsigned short)((uint8_t *)nl_tail(r) - (uint8_t *)a);
}

static void nl_init(struct nlreq *r, uint16_t type, uint16_t flags, const void *hdr, size_t len)
{
	memset(r, 0, sizeof(*r));
	r->h.nlmsg_len = (uint32_t)NLMSG_LENGTH(len);
	r->h.nlmsg_type = type;
	r->h.nlmsg_flags = (uint16_t)(NLM_F_REQUEST | NLM_F_ACK | flags);
	memcpy(NLMSG_DATA(&r->h), hdr, len);
}

/* Send one request and wait for its acknowledgement. 0 or the kernel's -errno. */
static int nl_talk(int fd, struct nlreq *r, uint32_t seq)
{
	struct sockaddr_nl k = { .nl_family = AF_NETLINK };
	uint8_t reply[4096] __attribute__((aligned(4)));

	r->h.nlmsg_seq = seq;
	if (sendto(fd, &r->h, r->h.nlmsg_len, 0, (struct sockaddr *)&k, sizeof(k)) < 0)
		return negative_errno();
	for (;;) {
		ssize_t n = recv(fd, reply, sizeof(reply), 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return negative_errno();
		}
		size_t left = (size_t)n;
		for (struct nlmsghdr *h = (struct nlmsghdr *)reply; NLMSG_OK(h, left);
		     h = NLMSG_NEXT(h, left)) {
			if (h->nlmsg_seq != seq || h->nlmsg_type != NLMSG_ERROR)
				continue;
			if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr)))
				return -EBADMSG;
			const struct nlmsgerr *e = NLMSG_DATA(h);
			return e->error;
		}
	}
}

static int write_sysctl(const char *path, const char *value)
{
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return negative_errno();
	return fd_write_all(fd, value, strlen(value));
}

int netsetup_link(void)
{
	_cleanup_close_ int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	struct sockaddr_nl local = { .nl_family = AF_NETLINK };
	struct timeval tv = { .tv_sec = 2 };
	struct nlreq r;
	struct in_addr a4;
	int r_, idx;

	if (fd < 0)
		return negative_errno();
	if (bind(fd, (struct sockaddr *)&local, sizeof(local)) < 0)
		return negative_errno();
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (inet_pton(AF_INET, NETSETUP_ADDR4, &a4) != 1)
		return -EINVAL;

	/* the built-in dummy driver makes "dummy0" at boot (numdummies=1): rename that one, so
	 * that capsem0 is the only interface besides lo; else ip link add capsem0 type dummy */
	struct ifinfomsg ifi = { .ifi_family = AF_UNSPEC,
				 .ifi_index = (int)if_nametoindex("dummy0") };
	nl_init(&r, RTM_NEWLINK, ifi.ifi_index > 0 ? 0 : NLM_F_CREATE | NLM_F_EXCL, &ifi,
		sizeof(ifi));
	if (nl_attr(&r, IFLA_IFNAME, NETSETUP_IFNAME, sizeof(NETSETUP_IFNAME)) < 0)
		return -ENOBUFS;
	if (ifi.ifi_index <= 0) {
		struct rtattr *info = nl_nest_begin(&r, IFLA_LINKINFO);
		if (!info || nl_attr(&r, IFLA_INFO_KIND, "dummy", sizeof("dummy")) < 0)
			return -ENOBUFS;
		nl_nest_end(&r, info);
	}
	r_ = nl_talk(fd, &r, 1);
	if (r_ < 0 && r_ != -EEXIST)
		return r_;
	idx = (int)if_nametoindex(NETSETUP_IFNAME);
	if (idx <= 0)
		return -ENODEV;

	/* no IPv6 on capsem0 (no link-local address, no route), nor on any link made later
	 * ("default"); ::1 on lo, which exists already, stays */
	(void)write_sysctl("/proc/sys/net/ipv6/conf/" NETSETUP_IFNAME "/disable_ipv6", "1\n");
	(void)write_sysctl("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1\n");

	/* ip addr add 192.0.0.8/32 dev capsem0 */
	struct ifaddrmsg ifa = { .ifa_family = AF_INET,
				 .ifa_prefixlen = 32,
				 .ifa_scope = RT_SCOPE_UNIVERSE,
				 .ifa_index = (unsigned)idx };
	nl_init(&r, RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, &ifa, sizeof(ifa));
	if (nl_attr(&r, IFA_LOCAL, &a4, sizeof(a4)) < 0 ||
	    nl_attr(&r, IFA_ADDRESS, &a4, sizeof(a4)) < 0)
		return -ENOBUFS;
	r_ = nl_talk(fd, &r, 2);
	if (r_ < 0)
		return r_;

	/* ip link set capsem0 up (a route needs the device up) */
	ifi = (struct ifinfomsg){
		.ifi_family = AF_UNSPEC, .ifi_index = idx, .ifi_flags = IFF_UP, .ifi_change = IFF_UP
	};
	nl_init(&r, RTM_NEWLINK, 0, &ifi, sizeof(ifi));
	r_ = nl_talk(fd, &r, 3);
	if (r_ < 0)
		return r_;

	/* ip route add default dev capsem0 src 192.0.0.8 */
	struct rtmsg rt = { .rtm_family = AF_INET,
			    .rtm_dst_len = 0,
			    .rtm_table = RT_TABLE_MAIN,
			    .rtm_protocol = RTPROT_BOOT,
			    .rtm_scope = RT_SCOPE_LINK,
			    .rtm_type = RTN_UNICAST };
	uint32_t oif = (uint32_t)idx;
	nl_init(&r, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, &rt, sizeof(rt));
	if (nl_attr(&r, RTA_OIF, &oif, sizeof(oif)) < 0 ||
	    nl_attr(&r, RTA_PREFSRC, &a4, sizeof(a4)) < 0)
		return -ENOBUFS;
	return nl_talk(fd, &r, 4);
}

/* ---- nft ---- */

int netsetup_rules_spawn(int *ret_pid)
{
	char *argv[] = { (char *)"nft", (char *)"-f", (char *)NETSETUP_RULES_PATH, NULL };
	char *envp[] = { (char *)"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL };
	int r = mkdir_p("/etc/capsem", 0755);
	if (r < 0)
		return r;
	const char *rules = netsetup_ruleset();
	r = write_file_atomic(NETSETUP_RULES_PATH, rules, strlen(rules), 0644);
	if (r < 0)
		return r;
	pid_t pid = fork();
	if (pid < 0)
		return negative_errno();
	if (pid == 0) {
		sigset_t none;
		sigemptyset(&none);
		(void)sigprocmask(SIG_SETMASK, &none, NULL);
		int null = open("/dev/null", O_RDONLY | O_NOCTTY);
		if (null > 0) {
			(void)dup2(null, 0);
			safe_close(null);
		}
		execve(NETSETUP_NFT, argv, envp);
		_exit(127);
	}
	*ret_pid = pid;
	return 0;
}

/* ---- sockets ---- */

int netsetup_listen(int type, uint16_t port, int *ret_fd)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons(port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int one = 1;
	_cleanup_close_ int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return negative_errno();
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return negative_errno();
	if (type == SOCK_STREAM && listen(fd, SOMAXCONN) < 0)
		return negative_errno();
	*ret_fd = TAKE_FD(fd);
	return 0;
}

/* ---- /etc ---- */

int netsetup_write_resolv(void)
{
	static const char text[] = "# capsem: DNS goes to capsem-dns-proxy, then to the host\n"
				   "nameserver 127.0.0.1\n";
	int r = mkdir_p("/etc", 0755);
	if (r < 0)
		return r;
	/* write_file_atomic renames over the path: a symlink there is replaced, not followed */
	return write_file_atomic("/etc/resolv.conf", text, sizeof(text) - 1, 0644);
}

int netsetup_write_hosts(const char *hostname)
{
	char text[512];
	int n = snprintf(text, sizeof(text),
			 "127.0.0.1\tlocalhost\n"
			 "::1\tlocalhost ip6-localhost ip6-loopback\n");
	if (hostname && hostname[0] && !streq(hostname, "localhost"))
		n += snprintf(text + n, sizeof(text) - (size_t)n, "127.0.1.1\t%s\n", hostname);
	if (n < 0 || (size_t)n >= sizeof(text))
		return -ENAMETOOLONG;
	int r = mkdir_p("/etc", 0755);
	if (r < 0)
		return r;
	r = write_file_atomic("/etc/hosts", text, (size_t)n, 0644);
	if (r < 0 || !hostname || !hostname[0])
		return r;
	n = snprintf(text, sizeof(text), "%s\n", hostname);
	return write_file_atomic("/etc/hostname", text, (size_t)n, 0644);
}
