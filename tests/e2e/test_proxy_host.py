"""The egress service host-side, without a VM: tests/helpers/proxy-front runs the real egress service
(egress_start: policy, CA, credentials, the DNS server and the proxy on their Unix sockets), and
this test speaks to those sockets exactly as the guest's capsem-dns-proxy and capsem-net-proxy do
(RFC 1035 TCP framing; the CSNP preamble, docs/PROTOCOL.md), with Python's ssl module as the TLS
client trusting only the installation CA. The upstream is tests/e2e/upstream.py.

What the guest side adds (netfilter, the proxies in the guest, real clients) is tested in
test_egress.py; here every proxy behaviour is checked quickly and exactly.
"""
import gzip
import hashlib
import json
import os
import socket
import ssl
import struct
import subprocess
import time

import pytest

from conftest import BUILD, wait_for
from test_egress import REAL_KEY, policy_toml
from upstream import Upstream, raw_echo_server

FRONT = os.path.join(BUILD, "tests", "helpers", "proxy-front")
# a wildcard rule: with the shipped wildcard_max_labels = 1, "*." stands for one label
WILD_RULE = '[[rule]]\nname = "wild"\naction = "allow"\nhosts = ["*.wild.test"]\nports = [443]\n'


class Host:
    def __init__(self, d):
        self.up = Upstream(str(d))
        self.raw = raw_echo_server()
        self.home = d / "home"
        self.home.mkdir()
        (self.home / "user.toml").write_text(policy_toml(self.up, self.raw.getsockname()[1],
                                                         WILD_RULE))
        cred = self.home / "credentials"
        cred.write_text(f'[anthropic]\napi_key = "{REAL_KEY}"\n')
        cred.chmod(0o600)
        self.dns_sock = str(d / "dns.sock")
        self.proxy_sock = self.dns_sock + ".proxy"
        env = dict(os.environ, CAPSEM_HOME=str(self.home))
        env.pop("ANTHROPIC_API_KEY", None)
        self.proc = subprocess.Popen([FRONT, "--listen", "127.0.0.1:0", "--name", "localhost",
                                      "--dns-socket", self.dns_sock],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        line = self.proc.stdout.readline()
        assert line.startswith(b"ready"), self.proc.stderr.read()
        self.ca = str(self.home / "ca" / "ca.crt")
        self.dns = socket.socket(socket.AF_UNIX)
        self.dns.connect(self.dns_sock)
        self.qid = 0

    def close(self):
        self.dns.close()
        self.proc.terminate()
        self.proc.wait(10)
        self.raw.close()
        self.up.close()

    def query(self, name, qtype=1):
        """(rcode, [addresses]) for one query over the DNS stream."""
        self.qid += 1
        qname = b"".join(bytes([len(p)]) + p for p in name.encode().split(b".")) + b"\0"
        q = struct.pack(">HHHHHH", self.qid, 0x0100, 1, 0, 0, 0) + qname + \
            struct.pack(">HH", qtype, 1)
        self.dns.sendall(struct.pack(">H", len(q)) + q)
        n = struct.unpack(">H", recv_exact(self.dns, 2))[0]
        a = recv_exact(self.dns, n)
        rid, flags, qd, an = struct.unpack(">HHHH", a[:8])
        assert rid == self.qid
        addrs = []
        if an:
            # the answer's RDATA for an A record is the last 4 bytes
            addrs.append(socket.inet_ntoa(a[-4:]))
        return flags & 0xF, addrs

    def connect(self, ip, port, comm="pytest"):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(30)
        s.connect(self.proxy_sock)
        body = struct.pack(">BH", 4, port) + socket.inet_aton(ip) + b"\0" * 12 + \
            struct.pack(">I", os.getpid()) + bytes([len(comm)]) + comm.encode()
        s.sendall(b"CSNP" + bytes([1]) + struct.pack(">H", len(body)) + body)
        return s

    def tls(self, name, port=443, sni=None):
        rcode, addrs = self.query(name)
        assert rcode == 0 and addrs, (name, rcode)
        s = self.connect(addrs[0], port)
        ctx = ssl.create_default_context(cafile=self.ca)
        return ctx.wrap_socket(s, server_hostname=sni or name)


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        d = s.recv(n - len(b))
        if not d:
            raise EOFError(f"closed after {len(b)} of {n} bytes")
        b += d
    return b


def read_response(s):
    """(status, headers dict (lower-case), body) of one response with Content-Length or chunked."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise EOFError(buf)
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    h = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    if "content-length" in h:
        n = int(h["content-length"])
        acc = bytearray(rest)  # bytes += would copy the whole body per record
        while len(acc) < n:
            d = s.recv(1 << 20)
            if not d:
                raise EOFError(f"closed after {len(acc)} of {n} bytes")
            acc += d
        return status, h, bytes(acc[:n]), bytes(acc[n:])
    if h.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += s.recv(65536)
            size_line, rest = rest.split(b"\r\n", 1)
            size = int(size_line, 16)
            while len(rest) < size + 2:
                rest += s.recv(65536)
            body += rest[:size]
            rest = rest[size + 2:]
            if size == 0:
                return status, h, body, rest
    return status, h, b"", rest


def get(s, path, host="upstream.test", method="GET", extra=b"", body=b""):
    hdr = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n".encode() + extra
    if body:
        hdr += f"Content-Length: {len(body)}\r\n".encode()
    s.sendall(hdr + b"\r\n" + body)
    st, h, b, _ = read_response(s)
    return st, h, b


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    if not os.path.exists(FRONT):
        pytest.fail(f"{FRONT} is missing: build first")
    h = Host(tmp_path_factory.mktemp("proxy"))
    yield h
    h.close()


def test_dns_fake_ip_stable_blocked_nxdomain(host):
    r1 = host.query("upstream.test")
    r2 = host.query("UPSTREAM.test")
    assert r1[0] == 0 and r1[1][0].startswith("198.1") and r1 == r2
    assert host.query("example.com")[0] == 3
    rc, addrs = host.query("upstream.test", qtype=28)
    assert rc == 0 and not addrs


def test_https_keep_alive_and_ca(host):
    s = host.tls("upstream.test")
    for _ in range(3):
        st, h, b = get(s, "/hello")
        assert st == 200 and b == b"hello from upstream\n"
    s.close()


def test_pipelined_requests_answered_in_order(host):
    s = host.tls("upstream.test")
    s.sendall(b"".join(f"GET /echo/{i} HTTP/1.1\r\nHost: upstream.test\r\n\r\n".encode()
                       for i in range(5)))
    rest = b""
    for i in range(5):
        class Buf:  # read_response over leftover bytes first
            def __init__(self, sock, pre):
                self.s, self.pre = sock, pre

            def recv(self, n):
                if self.pre:
                    b, self.pre = self.pre, b""
                    return b
                return self.s.recv(n)
        st, h, b, rest = read_response(Buf(s, rest))
        assert st == 200 and json.loads(b)["path"] == f"/echo/{i}"
    s.close()


def test_chunked_request_body(host):
    s = host.tls("upstream.test")
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: upstream.test\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    st, h, b, _ = read_response(s)
    assert st == 200 and json.loads(b)["body"] == "hello world"


def test_policy_403_names_the_rule(host):
    s = host.tls("upstream.test")
    st, h, b = get(s, "/echo", method="DELETE")
    assert st == 403 and json.loads(b)["rule"] == "no-delete"
    s = host.tls("upstream.test")
    st, h, b = get(s, "/admin/users")
    assert st == 403 and json.loads(b)["rule"] == "no-admin"


def test_host_header_must_name_the_connection(host):
    s = host.tls("upstream.test")
    st, h, b = get(s, "/hello", host="api.openai.com")
    assert st == 403 and json.loads(b)["rule"] == "host-mismatch"


def test_sni_mismatch_refused(host):
    with pytest.raises((ssl.SSLError, OSError, EOFError)):
        s = host.tls("upstream.test", sni="api.openai.com")
        get(s, "/hello")


def test_address_as_sni_counts_as_none(host):
    # https://IP/ clients send the address as server name (RFC 6066 forbids it): it names no
    # host, so it cannot front one; the leaf is still the resolved name's
    rcode, addrs = host.query("upstream.test")
    s = host.connect(addrs[0], 443)
    ctx = ssl.create_default_context(cafile=host.ca)
    ctx.check_hostname = False
    s = ctx.wrap_socket(s, server_hostname="127.0.0.1")
    st, h, b = get(s, "/hello", host="upstream.test")
    assert st == 200 and b == b"hello from upstream\n"


def test_safe_request_retried_when_a_reused_upstream_closes(host):
    # the upstream drops its kept-alive connection as the second request arrives: a GET is
    # sent again on a fresh connection (the client never sees the race), a POST is not
    s = host.tls("upstream.test")
    for _ in range(2):
        st, h, b = get(s, "/once")
        assert st == 200 and b == b"once\n", (st, b)
    # the retried GET was the new connection's first request: a POST is its second, dropped
    st, h, b = get(s, "/once", method="POST", body=b"x")
    assert st == 502 and json.loads(b)["error"] == "upstream failed"
    s.close()


def test_direct_ip_and_port_closed_at_once(host):
    for ip, port in (("93.184.216.34", 443), (host.query("upstream.test")[1][0], 8443)):
        t = time.monotonic()
        s = host.connect(ip, port)
        try:
            s.sendall(b"\x16\x03\x01\x00\x05hello")
            assert s.recv(10) == b""
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed before our bytes arrived: as good
        assert time.monotonic() - t < 2


def test_sse_not_buffered(host):
    s = host.tls("upstream.test")
    s.sendall(b"GET /sse?n=4&delay=0.4 HTTP/1.1\r\nHost: upstream.test\r\n\r\n")
    t0 = time.monotonic()
    times, buf = [], b""
    while len(times) < 4:
        d = s.recv(65536)
        assert d
        buf += d
        while b"data: event" in buf:
            times.append(time.monotonic() - t0)
            buf = buf[buf.index(b"data: event") + 11:]
    assert times[-1] - times[0] > 1.0, times


def test_gzip_and_big_bodies_unchanged(host):
    s = host.tls("upstream.test")
    st, h, b = get(s, "/gzip")
    assert h["content-encoding"] == "gzip" and b == gzip.compress(b"compressed hello " * 100, mtime=0)
    st, h, b = get(s, "/big?mib=32")
    assert st == 200 and hashlib.sha256(b).hexdigest() == hashlib.sha256(b"\xab" * (32 << 20)).hexdigest()


def test_upstream_pool_reuses_connections(host):
    before = host.up.stats.connections
    for _ in range(4):
        s = host.tls("upstream.test")
        assert get(s, "/hello")[0] == 200
        s.close()
        # kept: the proxy takes the upstream connection back when it reads this close, and no
        # outside signal says when; the next request must find it in the pool
        time.sleep(0.05)
    assert host.up.stats.connections - before <= 1


def test_credentials_only_on_the_provider_domain(host):
    s = host.tls("api.anthropic.com")
    body = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []}).encode()
    st, h, b = get(s, "/v1/messages", host="api.anthropic.com", method="POST",
                   extra=b"x-api-key: sk-ant-capsem-placeholder\r\ncontent-type: application/json\r\n",
                   body=body)
    assert st == 200
    seen = [hd for m, p, hd in host.up.stats.requests if p == "/v1/messages"][-1]
    assert seen["x-api-key"] == REAL_KEY
    assert seen.get("Accept-Encoding", seen.get("accept-encoding")) == "identity"
    s = host.tls("upstream.test")
    st, h, b = get(s, "/echo", extra=b"x-api-key: sk-ant-capsem-placeholder\r\n")
    assert json.loads(b)["headers"]["x-api-key"] == "sk-ant-capsem-placeholder"


def test_websocket_after_policy(host):
    s = host.tls("upstream.test")
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: upstream.test\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              b"Sec-WebSocket-Version: 13\r\n\r\n")
    st, h, b, rest = read_response(s)
    assert st == 101
    payload = b"ping"
    mask = b"\x01\x02\x03\x04"
    s.sendall(b"\x81" + bytes([0x80 | len(payload)]) + mask +
              bytes(c ^ mask[i % 4] for i, c in enumerate(payload)))
    data = rest
    while len(data) < 2 or len(data) < 2 + data[1]:
        data += s.recv(100)
    assert data[2:2 + data[1]] == b"echo: ping"


def test_raw_tcp_relay_half_close(host):
    rc, addrs = host.query("raw.test")
    s = host.connect(addrs[0], 7000)
    s.sendall(b"ping")
    s.shutdown(socket.SHUT_WR)
    out = b""
    while True:
        d = s.recv(100)
        if not d:
            break
        out += d
    assert out == b"raw:ping"


def test_plain_http_port_80(host):
    rc, addrs = host.query("upstream.test")
    s = host.connect(addrs[0], 80)
    assert get(s, "/hello")[2] == b"hello from upstream\n"
    s = host.connect(addrs[0], 80)
    s.sendall(b"\x00\x01binary junk")
    assert s.recv(10) == b""


def test_slow_client_on_http_ports_is_waited_for(host):
    """A guest under TCG may take longer than the sniff window to send its first bytes: on the
    HTTP ports silence decides nothing (HTTP and TLS start with the client), so a ClientHello
    or request line that comes late is served, not taken for a non-HTTP protocol."""
    rc, addrs = host.query("upstream.test")
    s = host.connect(addrs[0], 80)
    time.sleep(1.0)  # well past SNIFF_MS (300 ms): the slow client this test is about
    assert get(s, "/hello")[2] == b"hello from upstream\n"
    raw = host.connect(addrs[0], 443)
    time.sleep(1.0)  # the same slow client on the TLS port
    ctx = ssl.create_default_context(cafile=host.ca)
    t = ctx.wrap_socket(raw, server_hostname="upstream.test")
    assert get(t, "/hello")[2] == b"hello from upstream\n"


def test_malformed_request_400(host):
    s = host.tls("upstream.test")
    s.sendall(b"GET /x HTTP/1.1\r\nHost: upstream.test\r\nBad Header\r\n\r\n")
    st, h, b, _ = read_response(s)
    assert st == 400


def test_upstream_down_502(host, tmp_path):
    pol = host.home / "user.toml"
    orig = pol.read_text()
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    try:
        pol.write_text(orig.replace(f'connect = "127.0.0.1:{host.up.https_port}"\n',
                                    f'connect = "127.0.0.1:{port}"\n', 1))
        # the proxy looks at the policy files at most every 500 ms, at a request
        st, h, b = wait_for(lambda: (lambda r: r if r[0] == 502 else None)(
            get(host.tls("upstream.test"), "/hello")), 30, "the new policy to take effect")
        assert st == 502 and "upstream" in json.loads(b)["error"]
    finally:
        pol.write_text(orig)
        wait_for(lambda: get(host.tls("upstream.test"), "/hello")[0] == 200, 30,
                 "the policy to be restored")


def raw_request(s, head):
    """Send a raw request head; (status, headers, body) of the answer."""
    s.sendall(head)
    st, h, b, _ = read_response(s)
    return st, h, b


def upstream_paths(host):
    return [p for m, p, hd in host.up.stats.requests]


def test_encoded_path_decided_and_forwarded_normalised(host):
    # issue 17 item 1: a block on /admin; "%61" is "a" to the upstream (RFC 3986 6.2.2)
    before = len(host.up.stats.requests)
    for path in ("/%61dmin/users", "/%61%64%6d%69%6E", "/ADMIN/users", "/Admin", "/%41dmin"):
        s = host.tls("upstream.test")
        st, h, b = get(s, path)
        assert st == 403, (path, st, b)
        d = json.loads(b)
        assert d["rule"] == "no-admin", (path, d)
        assert d["path"].lower().startswith("/admin"), d  # the normalised path is reported
        s.close()
    assert len(host.up.stats.requests) == before
    assert not [p for p in upstream_paths(host) if "admin" in p.lower() or "%61" in p]
    # allowed: the upstream gets the normalised path (unreserved characters decoded, other
    # escapes with upper-case hex), the query exactly as sent
    s = host.tls("upstream.test")
    st, h, b = get(s, "/%65cho/caf%c3%a9%7e?q=%61%2f")
    assert st == 200, b
    assert json.loads(b)["path"] == "/echo/caf%C3%A9~?q=%61%2f"
    assert upstream_paths(host)[-1] == "/echo/caf%C3%A9~?q=%61%2f"
    s.close()


def test_duplicate_host_400_never_upstream(host):
    # issue 17 item 2: the proxy checked the first Host, the upstream got both
    before = len(host.up.stats.requests)
    s = host.tls("upstream.test")
    st, h, b = raw_request(s, b"GET /echo HTTP/1.1\r\nHost: upstream.test\r\n"
                              b"Host: api.anthropic.com\r\n\r\n")
    assert st == 400 and json.loads(b)["error"] == "malformed HTTP request"
    # on the provider's host, where the real key would be swapped in
    s = host.tls("api.anthropic.com")
    st, h, b = raw_request(s, b"POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\n"
                              b"Host: upstream.test\r\nx-api-key: sk-ant-capsem-placeholder\r\n"
                              b"Content-Length: 0\r\n\r\n")
    assert st == 400
    # a second credential header, a second Content-Length (even equal), no Host at all
    for head in (b"GET /echo HTTP/1.1\r\nHost: api.anthropic.com\r\n"
                 b"x-api-key: sk-ant-capsem-placeholder\r\nX-Api-Key: other\r\n\r\n",
                 b"GET /echo HTTP/1.1\r\nHost: api.anthropic.com\r\nAuthorization: Bearer a\r\n"
                 b"authorization: Bearer sk-ant-capsem-placeholder\r\n\r\n",
                 b"POST /echo HTTP/1.1\r\nHost: api.anthropic.com\r\nContent-Length: 1\r\n"
                 b"Content-Length: 1\r\n\r\nx",
                 b"GET /echo HTTP/1.1\r\nUser-Agent: no-host\r\n\r\n"):
        s = host.tls("api.anthropic.com")
        st, h, b = raw_request(s, head)
        assert st == 400, head
    assert len(host.up.stats.requests) == before
    # one Host, one key: fine
    s = host.tls("upstream.test")
    assert get(s, "/hello")[0] == 200


def test_wildcard_names_one_label_deep(host):
    # issue 17 item 6: with wildcard_max_labels = 1 (the shipped default) a guest-chosen name
    # two labels under "*.wild.test" gets no address, so nothing ever resolves it on the host
    rc, addrs = host.query("a.wild.test")
    assert rc == 0 and addrs
    assert host.query("c2VjcmV0.a.wild.test")[0] == 3
    assert host.query("x.y.z.wild.test")[0] == 3
    assert host.query("wild.test")[0] == 3
