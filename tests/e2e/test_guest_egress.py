"""The guest side of air-gapped egress (DESIGN.md §6, docs/PROTOCOL.md §7-8), in a real microVM.

The guest has no NIC: capsem0 (a dummy interface) carries the default route, nftables redirects
every TCP connection to capsem-net-proxy (which relays it over vsock port 5002 with a preamble) and
DNS to capsem-dns-proxy (one vsock stream to port 5007), and rejects the rest at once.

The host end is FAKED here: the test listens on <vmdir>/vsock_5002 and <vmdir>/vsock_5007 (where
the vsock backend delivers guest->host connections to those ports) before the VM boots, and starts
capsem-vm with --no-egress so that it leaves those two sockets alone. (tests/e2e/test_egress.py
covers the real host side.)
"""
import os
import queue
import socket
import struct
import subprocess
import threading
import time

import pytest

import capsem_client as cc
from conftest import VM, need_image, procs_mentioning, wait_for

AGENT_HOST = os.environ.get("CAPSEM_AGENT_HOST_BIN") or os.path.join(
    os.environ.get("CAPSEM_BUILD", os.path.join(os.path.dirname(__file__), "..", "..", "build")),
    "src", "guest", "capsem-agent-host")

FAKE_IP = "198.18.0.7"

# hc: the test's own guest client (the minimal image has only busybox). Connects to IP PORT (IPv4
# or IPv6), copies stdin to the socket and the socket to stdout at the same time, half-closes
# (shutdown SHUT_WR) at stdin EOF and exits 0 at the socket's EOF. Exit 2 when connect fails.
HC_SOURCE = r"""
#include <arpa/inet.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
static int put(int fd, const char *b, ssize_t n)
{
	for (ssize_t o = 0; o < n;) {
		ssize_t k = write(fd, b + o, (size_t)(n - o));
		if (k <= 0)
			return -1;
		o += k;
	}
	return 0;
}
int main(int argc, char **argv)
{
	struct sockaddr_in6 s6 = { .sin6_family = AF_INET6 };
	struct sockaddr_in s4 = { .sin_family = AF_INET };
	static char b[65536];
	if (argc != 3)
		return 3;
	int v6 = strchr(argv[1], ':') != NULL;
	int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0), in_open = 1;
	if (fd < 0)
		return 3;
	s4.sin_port = s6.sin6_port = htons((unsigned short)strtoul(argv[2], NULL, 10));
	inet_pton(v6 ? AF_INET6 : AF_INET, argv[1], v6 ? (void *)&s6.sin6_addr : (void *)&s4.sin_addr);
	if (connect(fd, v6 ? (struct sockaddr *)&s6 : (struct sockaddr *)&s4,
		    v6 ? sizeof(s6) : sizeof(s4)) < 0) {
		perror("connect");
		return 2;
	}
	/* both directions at once (an echo peer would deadlock a write-all-then-read client) */
	for (;;) {
		struct pollfd p[2] = { { .fd = in_open ? 0 : -1, .events = POLLIN },
				       { .fd = fd, .events = POLLIN } };
		if (poll(p, 2, -1) < 0)
			return 7;
		if (p[1].revents) {
			ssize_t n = read(fd, b, sizeof(b));
			if (n < 0)
				return 6;
			if (n == 0)
				return 0;
			if (put(1, b, n) < 0)
				return 5;
		}
		if (in_open && p[0].revents) {
			ssize_t n = read(0, b, sizeof(b));
			if (n <= 0) {
				shutdown(fd, SHUT_WR);
				in_open = 0;
			} else if (put(fd, b, n) < 0) {
				return 4;
			}
		}
	}
}
"""


# ---- the preamble (docs/PROTOCOL.md §7), decoded independently of src/proto ----

def read_preamble(conn):
    """Read exactly one preamble from conn; returns (dict, leftover bytes)."""
    buf = b""
    while len(buf) < 7:
        d = conn.recv(64)
        assert d, f"EOF inside the preamble header: {buf!r}"
        buf += d
    assert buf[:4] == b"CSNP" and buf[4] == 1, buf
    (blen,) = struct.unpack(">H", buf[5:7])
    assert 24 <= blen <= 40, blen
    while len(buf) < 7 + blen:
        d = conn.recv(64)
        assert d
        buf += d
    body = buf[7:7 + blen]
    fam = body[0]
    (port,) = struct.unpack(">H", body[1:3])
    addr = body[3:19]
    (pid,) = struct.unpack(">I", body[19:23])
    clen = body[23]
    assert clen == blen - 24
    comm = body[24:24 + clen].decode("ascii")
    if fam == 4:
        assert addr[4:] == bytes(12)
        ip = socket.inet_ntop(socket.AF_INET, addr[:4])
    else:
        assert fam == 6
        ip = socket.inet_ntop(socket.AF_INET6, addr)
    return {"family": fam, "ip": ip, "port": port, "pid": pid, "comm": comm}, buf[7 + blen:]


class FakeNet:
    """<vmdir>/vsock_5002: records each preamble; says HELLO, echoes, reports the guest's EOF."""

    def __init__(self, path):
        self.path = path
        self.seen = []
        self.lock = threading.Lock()
        self.open = 0
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(512)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        with self.lock:
            self.open += 1
        try:
            c.settimeout(60)
            pre, rest = read_preamble(c)
            with self.lock:
                self.seen.append(pre)
            c.sendall(b"HELLO %s:%d\n" % (pre["ip"].encode(), pre["port"]))
            d = rest  # bytes that came with the preamble
            while True:
                if not d:
                    d = c.recv(65536)
                if not d:
                    break
                if d.startswith(b"close-now"):
                    c.sendall(b"BYE\n")  # the host ends first, the guest still sending
                    return
                c.sendall(d)
                d = b""
            # the guest half-closed: we can still write, and then close
            c.sendall(b"EOF-SEEN\n")
        except (OSError, AssertionError):
            pass
        finally:
            c.close()
            with self.lock:
                self.open -= 1

    def close(self):
        self.srv.close()


def dns_qname(msg):
    """(name, qtype, end offset) of the first question of msg."""
    off, labels = 12, []
    while msg[off]:
        n = msg[off]
        labels.append(msg[off + 1:off + 1 + n].decode())
        off += 1 + n
    qtype, _ = struct.unpack(">HH", msg[off + 1:off + 5])
    return ".".join(labels), qtype, off + 5


def dns_answer(q):
    """NOERROR with FAKE_IP for A, no records for anything else."""
    name, qtype, end = dns_qname(q)
    hdr = bytearray(q[:12])
    hdr[2] = 0x80 | (q[2] & 0x79) | 0x04  # QR, opcode, AA, RD
    hdr[3] = 0x80
    an = b""
    if qtype == 1:
        an = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(FAKE_IP)
    hdr[4:12] = struct.pack(">HHHH", 1, 1 if an else 0, 0, 0)
    return bytes(hdr) + q[12:end] + an


class FakeDNS:
    """<vmdir>/vsock_5007: RFC 1035 framing; answers at once, except names starting with "slow."
    (after 0.5 s, so later queries overtake them); a query for fail.test makes it drop the
    connection without answering. (Answers to one client are not reordered otherwise: busybox
    nslookup may send its A and AAAA queries with the same ID under TCG's coarse clock.)"""

    def __init__(self, path):
        self.queries = []
        self.answered = []
        self.conns = 0
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.conns += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _answer(self, c, lock, q):
        a = dns_answer(q)
        with lock:
            try:
                c.sendall(struct.pack(">H", len(a)) + a)
            except OSError:
                return
            self.answered.append(dns_qname(q)[0])

    def _slow(self, c, lock, q):
        # slow answers keep their arrival order among themselves (same-ID clients, see above)
        while True:
            item = q.get()
            if item is None:
                return
            due, query = item
            # the point: a slow upstream answers late
            time.sleep(max(0.0, due - time.monotonic()))
            self._answer(c, lock, query)

    def _serve(self, c):
        buf = b""
        lock = threading.Lock()
        slow = queue.Queue()
        slow_t = threading.Thread(target=self._slow, args=(c, lock, slow), daemon=True)
        slow_t.start()
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
                batch = []
                while len(buf) >= 2:
                    (n,) = struct.unpack(">H", buf[:2])
                    if len(buf) < 2 + n:
                        break
                    batch.append(buf[2:2 + n])
                    buf = buf[2 + n:]
                for q in batch:
                    self.queries.append(dns_qname(q)[:2] + (struct.unpack(">H", q[:2])[0],))
                if any(dns_qname(q)[0] == "fail.test" for q in batch):
                    return
                for q in batch:
                    if dns_qname(q)[0].startswith("slow."):
                        slow.put((time.monotonic() + 0.5, q))
                    else:
                        self._answer(c, lock, q)
        except OSError:
            pass
        finally:
            slow.put(None)
            slow_t.join(5)  # late answers go out (or fail) before the close
            c.close()

    def close(self):
        self.srv.close()


@pytest.fixture(scope="module")
def egress(tmp_path_factory):
    need_image()
    d = tmp_path_factory.mktemp("egress")
    vmdir = d / "vm"
    vmdir.mkdir(mode=0o700)
    net = FakeNet(str(vmdir / "vsock_5002"))
    dns = FakeDNS(str(vmdir / "vsock_5007"))
    src = d / "hc.c"
    src.write_text(HC_SOURCE)
    for compiler in ("musl-gcc", "cc"):
        p = subprocess.run([compiler, "-static", "-O2", "-o", str(d / "hc"), str(src)],
                           capture_output=True)
        if p.returncode == 0:
            break
    assert p.returncode == 0, p.stderr
    # --no-egress: capsem-vm leaves vsock_5002 and vsock_5007 to our fakes
    v = VM(vmdir, "--cpus", "2", "--memory", "512M", "--no-egress")
    v.net, v.dns = net, dns
    r = cc.run(v.vsock, ["sh", "-c", "cat > /usr/bin/hc && chmod 755 /usr/bin/hc"],
               stdin=(d / "hc").read_bytes())
    assert r.status == 0, r
    yield v
    net.close()
    dns.close()
    assert v.stop() == 0
    assert not procs_mentioning(str(d)), "QEMU or capsem-vm left behind"


def sh(vm, script, timeout=60):
    r = cc.sh(vm.vsock, script, io_timeout=timeout)
    assert r.kind is not None, r
    return r


def test_boot_stage_net(egress):
    names = [s["name"] for s in egress.ready["stages"]]
    assert "net" in names and "net_failed" not in names, names
    assert names.index("net_lo") < names.index("net") < names.index("agent_spawn")


def test_only_lo_and_capsem0(egress):
    r = sh(egress, "ls /sys/class/net")
    assert r.stdout.split() == [b"capsem0", b"lo"], r
    r = sh(egress, "ip -4 addr show capsem0; ip route; ip -6 addr show capsem0; ip -6 route")
    out = r.stdout.decode()
    assert "inet 192.0.0.8/32" in out, out
    assert "default dev capsem0" in out, out
    assert "inet6" not in out.split("default dev capsem0")[1], out  # no IPv6 on capsem0


def test_resolv_conf_and_hosts(egress):
    r = sh(egress, "cat /etc/resolv.conf; echo ---; cat /etc/hosts")
    resolv, hosts = r.stdout.decode().split("---\n")
    assert [ln for ln in resolv.splitlines() if not ln.startswith("#")] == ["nameserver 127.0.0.1"]
    assert "127.0.0.1\tlocalhost" in hosts and "::1\tlocalhost" in hosts, hosts


def test_tcp_reaches_host_with_preamble(egress):
    before = len(egress.net.seen)
    # exec: nc keeps the shell's pid, so the preamble's pid is known; stdin EOF half-closes
    r = sh(egress, "printf 'ping\\n' > /tmp/in; echo $$; exec hc 1.2.3.4 443 < /tmp/in")
    lines = r.stdout.decode().splitlines()
    assert r.status == 0, r
    pid = int(lines[0])
    # both ways, and the host's bytes after the guest's EOF still arrive (half-close)
    assert lines[1:] == ["HELLO 1.2.3.4:443", "ping", "EOF-SEEN"], r
    pre = egress.net.seen[before]
    assert pre == {"family": 4, "ip": "1.2.3.4", "port": 443, "pid": pid, "comm": "hc"}, pre


def test_host_closing_first_ends_the_guest_connection(egress):
    # busybox nc exits when its socket reaches EOF: with its stdin (a FIFO) still open for 20 s,
    # it only returns early if the host's close got through the proxy at once
    t0 = time.monotonic()
    r = sh(egress, "rm -f /tmp/fifo; mkfifo /tmp/fifo; "
           "(echo close-now; exec sleep 20) > /tmp/fifo 2>/dev/null & "
           "nc 1.2.3.4 443 < /tmp/fifo; echo rc=$?; kill $!")
    assert r.stdout == b"HELLO 1.2.3.4:443\nBYE\nrc=0\n", r
    assert time.monotonic() - t0 < 10


def test_tcp_other_port_and_big_transfer(egress):
    # 4 MiB through the proxy and back: no byte lost or reordered
    r = sh(egress, "head -c 4194304 /dev/urandom > /tmp/big; sha256sum < /tmp/big; "
           "hc 10.9.8.7 8080 < /tmp/big > /tmp/back; h=$(head -n1 /tmp/back); echo $h; "
           "tail -c +$((${#h} + 2)) /tmp/back | head -c 4194304 | sha256sum; "
           "tail -c 9 /tmp/back; wc -c < /tmp/back", timeout=180)
    out = r.stdout.decode().splitlines()
    assert out[1] == "HELLO 10.9.8.7:8080", out
    assert out[0].split()[0] == out[2].split()[0], out
    assert out[3] == "EOF-SEEN", out
    assert int(out[4]) == 20 + 4194304 + 9, out
    assert egress.net.seen[-1]["port"] == 8080


def test_many_concurrent_connections_no_fd_leak(egress):
    script = (
        "P=$(pidof capsem-net-proxy); before=$(ls /proc/$P/fd | wc -l); "
        "i=0; while [ $i -lt 150 ]; do (echo c$i | hc 5.6.7.8 443 > /tmp/c$i) & i=$((i+1)); done; "
        "wait; ok=0; i=0; while [ $i -lt 150 ]; do "
        "  [ \"$(sed -n 2p /tmp/c$i)\" = c$i ] && ok=$((ok+1)); i=$((i+1)); done; "
        "n=0; while [ $n -lt 50 ]; do after=$(ls /proc/$P/fd | wc -l); "
        "  [ $after = $before ] && break; sleep 0.2; n=$((n+1)); done; echo $ok $before $after")
    r = sh(egress, script, timeout=300)
    ok, before, after = map(int, r.stdout.split())
    assert ok == 150, r
    assert after == before, f"fds before {before}, after {after}"


# connect to a guest-local `nc -l` that may take a moment to listen under load
RETRY_HC = "n=0; until echo hi | hc {addr} {port}; do n=$((n+1)); [ $n -ge 25 ] && break; sleep 0.2; done"


def test_connect_to_loopback_is_not_redirected(egress):
    # a guest-local server is reached directly; nothing goes to the host
    before = len(egress.net.seen)
    r = sh(egress, "(echo local | nc -l -p 7777 > /dev/null) & "
           + RETRY_HC.format(addr="127.0.0.1", port=7777) + "; echo rc=$?; wait")
    assert b"rc=0" in r.stdout, r
    assert len(egress.net.seen) == before


def test_direct_connection_to_the_proxy_port_is_refused(egress):
    before = len(egress.net.seen)
    r = sh(egress, "echo x | hc 127.0.0.1 10002; echo rc=$?")
    assert b"HELLO" not in r.stdout and b"rc=0" not in r.stdout, r  # reset
    assert len(egress.net.seen) == before


def test_udp_and_icmp_fail_at_once(egress):
    r = sh(egress, "s=$(cat /proc/uptime); tftp -g -r f -l /tmp/f 1.2.3.4 9999; echo rc=$?; "
           "ping -c 1 -W 5 1.2.3.4 >/dev/null 2>&1; echo rc=$?; "
           "e=$(cat /proc/uptime); echo ${s%% *} ${e%% *}")
    out = r.stdout.decode().split()
    assert out[0] != "rc=0" and out[1] != "rc=0", r
    start, end = float(out[2]), float(out[3])
    assert end - start < 4.0, f"took {end - start:.2f} s: {r}"  # a hang would be >= 5 s


def test_ipv6_fails_at_once(egress):
    r = sh(egress, "s=$(cat /proc/uptime); hc 2001:db8::1 443 </dev/null; echo rc=$?; "
           "e=$(cat /proc/uptime); echo ${s%% *} ${e%% *}")
    out = r.stdout.decode().split()
    assert out[0] != "rc=0", r
    assert float(out[2]) - float(out[1]) < 4.0, r
    # ::1 still works inside the guest
    r = sh(egress, "(echo six | nc -l -p 7778) & "
           + RETRY_HC.format(addr="::1", port=7778) + "; echo rc=$?; wait")
    assert b"rc=0" in r.stdout, r


def test_dns_through_the_host(egress):
    before = len(egress.dns.queries)
    r = sh(egress, "nslookup example.com")
    out = r.stdout.decode()
    assert FAKE_IP in out, r
    names = [q[0] for q in egress.dns.queries[before:]]
    assert "example.com" in names, egress.dns.queries
    # a query sent to any other server is redirected to the proxy too
    r = sh(egress, "nslookup other.example 8.8.8.8")
    assert FAKE_IP in r.stdout.decode(), r
    assert "other.example" in [q[0] for q in egress.dns.queries]


def test_dns_answers_out_of_order(egress):
    # the slow name is asked first and answered last: both clients get their own answer
    r = sh(egress, "nslookup slow.example > /tmp/slow & sleep 0.1; nslookup quick.example; "
           "wait; cat /tmp/slow")
    out = r.stdout.decode()
    assert out.count(FAKE_IP) == 2 and "slow.example" in out and "quick.example" in out, r
    order = [n for n in egress.dns.answered if n in ("slow.example", "quick.example")]
    assert order.index("quick.example") < order.index("slow.example"), order


def test_dns_over_tcp_redirected(egress):
    # a framed query to 9.9.9.9:53 over TCP: redirected to the proxy, forwarded, answered
    q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\x03tcp\x04test\x00\x00\x01\x00\x01"
    frame = struct.pack(">H", len(q)) + q
    esc = "".join("\\%03o" % b for b in frame)
    r = sh(egress, f"printf '{esc}' | hc 9.9.9.9 53 | od -An -v -tx1")
    got = bytes.fromhex(r.stdout.decode().replace("\n", " ").replace(" ", ""))
    (n,) = struct.unpack(">H", got[:2])
    a = got[2:2 + n]
    assert a[:2] == b"\x12\x34", got  # the client's own ID came back
    assert a[2] & 0x80 and a[3] & 0x0f == 0, got
    assert a.endswith(socket.inet_aton(FAKE_IP)), got


def test_dns_servfail_when_the_link_drops_then_recovers(egress):
    conns = egress.dns.conns
    t0 = time.monotonic()
    r = sh(egress, "nslookup fail.test")
    assert b"SERVFAIL" in r.stdout + r.stderr, r
    assert time.monotonic() - t0 < 10
    # the proxy reconnects (ahead of the next query, after its back-off) and the next query is
    # answered
    wait_for(lambda: egress.dns.conns > conns, 30, "the guest's DNS proxy to reconnect")
    r = sh(egress, "nslookup again.example")
    assert FAKE_IP in r.stdout.decode(), r
    assert egress.dns.conns > conns


def test_proxy_restarted_by_init(egress):
    r = sh(egress, "P=$(pidof capsem-net-proxy); kill -9 $P; n=0; "
           "while Q=$(pidof capsem-net-proxy); [ -z \"$Q\" ] || [ \"$Q\" = $P ]; do "
           "  n=$((n+1)); [ $n -ge 50 ] && break; sleep 0.1; done; "
           "echo $P $Q; echo again | hc 4.3.2.1 443")
    lines = r.stdout.decode().splitlines()
    p, q = lines[0].split()
    assert p != q, r
    assert lines[1:] == ["HELLO 4.3.2.1:443", "again", "EOF-SEEN"], r


# ---- BOOT_CONFIG's environment for execs, with the host build of the agent ----

@pytest.mark.skipif(not os.path.exists(AGENT_HOST), reason="no capsem-agent-host build")
def test_boot_config_env_reaches_execs(tmp_path):
    ctl = str(tmp_path / "control.sock")
    lsn = str(tmp_path / "exec.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(ctl)
    srv.listen(1)
    srv.settimeout(10)
    p = subprocess.Popen([AGENT_HOST, "--listen-unix", lsn, "--control-unix", ctl],
                         stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        c, _ = srv.accept()
        pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
        env = ["CAPSEM_TEST_KEY=placeholder", "PATH=/usr/bin:/bin:/capsem"]
        bc = struct.pack(">Q", 0) + cc._s("") + cc._s(pem) + struct.pack(">I", len(env))
        bc += b"".join(cc._s(e) for e in env)
        c.sendall(cc.frame(cc.BOOT_CONFIG, bc))
        line = b""
        while b"environment entries" not in line:
            line = p.stderr.readline()
            assert line, "the agent exited"
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(lsn)
        r = cc.session(s, cc.frame(cc.EXEC, cc.exec_payload(
            ["sh", "-c", 'echo "$CAPSEM_TEST_KEY $PATH $OWN"'], env=["OWN=1", "PATH=/bin"])))
        s.close()
        # boot entries over the defaults, the exec's own over both
        assert r.stdout == b"placeholder /bin 1\n", r
    finally:
        p.kill()
        p.wait()
        srv.close()
