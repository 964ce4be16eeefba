/* netsetup.h - the guest's air-gapped network, set up by capsem-init (docs/ARCHITECTURE.md,
 * "Guest network"; DESIGN.md §6).
 *
 * There is no NIC. A dummy interface carries the default route so that connect() to any IPv4
 * address has a route; an nftables ruleset (loaded with the initramfs's nft) redirects every TCP
 * connection that does not stay on loopback to capsem-net-proxy and DNS (UDP and TCP port 53) to
 * capsem-dns-proxy, and rejects everything else at once. IPv6 has loopback only: capsem0 carries
 * no IPv6 address or route, so an IPv6 connect to anything but ::1 fails with ENETUNREACH at once
 * (and the ruleset rejects IPv6 too, should a route ever appear).
 */
#pragma once

#include <stdint.h>

#define NETSETUP_IFNAME "capsem0"
/* RFC 7600's "IPv4 dummy address", meant for a host with no real IPv4 address: it cannot collide
 * with a destination anyone connects to (198.18.0.0/15, the host's fake-IP range, included) */
#define NETSETUP_ADDR4 "192.0.0.8"
#define NETSETUP_NET_PORT 10002 /* capsem-net-proxy on 127.0.0.1 (TCP) */
#define NETSETUP_DNS_PORT 53	/* capsem-dns-proxy on 127.0.0.1 (UDP and TCP) */
#define NETSETUP_NFT "/usr/sbin/nft"
/* in the initramfs's own /etc, which stays where it is: nft may still be starting when init moves
 * /run, /dev and /proc into a root image and chroots (nft keeps the initramfs as its root) */
#define NETSETUP_RULES_PATH "/etc/capsem/egress.nft"

/* Set up capsem0 (rtnetlink: the kernel's dummy0 renamed, or a new "dummy" link; IPv6 disabled
 * on it, NETSETUP_ADDR4/32, up, a default route through it). lo must be up already. 0 or
 * -errno. */
int netsetup_link(void);

/* The nftables ruleset text (NUL-terminated, static storage; built on first call). */
const char *netsetup_ruleset(void);

/* Write the ruleset to NETSETUP_RULES_PATH and start `nft -f` on it. 0 with *ret_pid, or
 * -errno. The caller reaps the child; exit status 0 means the rules are loaded. */
int netsetup_rules_spawn(int *ret_pid);

/* A listening socket on 127.0.0.1:port: type SOCK_STREAM (listening) or SOCK_DGRAM (bound).
 * O_CLOEXEC. 0 with *ret_fd, or -errno. */
int netsetup_listen(int type, uint16_t port, int *ret_fd);

/* /etc/resolv.conf: "nameserver 127.0.0.1" (replacing a file or a symlink). 0 or -errno. */
int netsetup_write_resolv(void);
/* /etc/hosts: localhost for 127.0.0.1 and ::1, and hostname (when not NULL or empty) for
 * 127.0.1.1; /etc/hostname: hostname (when given). 0 or -errno. */
int netsetup_write_hosts(const char *hostname);
