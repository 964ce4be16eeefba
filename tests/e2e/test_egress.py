"""Egress from inside a real VM (the Debian image: curl, python3 and node as the clients): the
guest has no NIC, DNS gives fake addresses for allowed names only, every TCP connection goes
through the host proxy, which applies the policy, terminates TLS with the installation CA,
swaps credential placeholders, streams responses and writes the session ledger.

The internet is replaced by tests/e2e/upstream.py on 127.0.0.1 (its own test CA, trusted by the
proxy through the policy's [upstream] ca_file); the policy's [[upstream.override]] entries send
the test names there. Nothing here touches the network.
"""
import gzip
import json
import os
import re
import socket
import sqlite3
import subprocess
import time

import pytest

import capsem_client as cc
from conftest import VM, procs_mentioning, wait_for
from test_debian_image import DEBIAN, ensure_debian_image
from upstream import KEYS, Upstream, raw_echo_server

# the stand-in accepts only this key on Anthropic's routes (it enforces keys as the API does)
REAL_KEY = KEYS["anthropic"]

# This module's own rules (test_proxy_host.py shares policy_toml): an allow on /v1/ with a block
# inside it, and a wildcard, which stands for one label (the shipped wildcard_max_labels = 1).
# The upstream's certificate covers *.wild.test; a.wild.test is sent there, so that the one name
# the guest may resolve under the wildcard never reaches the host's resolver.
MODULE_RULES = """
[[rule]]
name = "v1-api"
action = "allow"
hosts = ["upstream.test"]
ports = [443]
paths = ["/v1/"]
priority = 20

[[rule]]
name = "no-v1-admin"
action = "block"
hosts = ["upstream.test"]
ports = [443]
paths = ["/v1/admin"]
priority = 30

[[rule]]
name = "wild"
action = "allow"
hosts = ["*.wild.test"]
ports = [443]
"""


def policy_toml(up, raw_port, extra=""):
    ov = lambda host, port, target: (
        f'[[upstream.override]]\nhost = "{host}"\nport = {port}\nconnect = "{target}"\n')
    https = f"127.0.0.1:{up.https_port}"
    return f"""
[policy]
default = "block"

[[rule]]
name = "test-upstream"
action = "allow"
hosts = ["upstream.test", "api.anthropic.com", "api.openai.com", "generativelanguage.googleapis.com"]
ports = [443, 80]

[[rule]]
name = "no-delete"
action = "block"
hosts = ["upstream.test"]
methods = ["DELETE"]
priority = 10

[[rule]]
name = "no-admin"
action = "block"
hosts = ["upstream.test"]
paths = ["/admin"]
priority = 10

[[rule]]
name = "raw-port"
action = "allow"
hosts = ["raw.test"]
ports = [7000]

{extra}
[upstream]
ca_file = "{up.ca}"

{ov("upstream.test", 443, https)}
{ov("api.anthropic.com", 443, https)}
{ov("api.openai.com", 443, https)}
{ov("generativelanguage.googleapis.com", 443, https)}
{ov("upstream.test", 80, f"127.0.0.1:{up.http_port}")}
{ov("raw.test", 7000, f"127.0.0.1:{raw_port}")}
"""


def module_policy(up, raw_port):
    return (policy_toml(up, raw_port, MODULE_RULES) +
            f'\n[[upstream.override]]\nhost = "a.wild.test"\nport = 443\n'
            f'connect = "127.0.0.1:{up.https_port}"\n')


def EgressVM(d, home):
    """capsem-vm with the Debian image, a ledger and a private home; no host provider key."""
    env = dict(os.environ)
    env.pop("ANTHROPIC_API_KEY", None)
    return VM(d / "vm", "--cpus", "2", "--memory", "1G", image=DEBIAN, home=home, env=env,
              ledger=d / "session.db")


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    ensure_debian_image()
    d = tmp_path_factory.mktemp("egress")
    up = Upstream(str(d))
    raw = raw_echo_server()
    home = d / "home"
    home.mkdir()
    (home / "user.toml").write_text(module_policy(up, raw.getsockname()[1]))
    cred = home / "credentials"
    cred.write_text(f'[anthropic]\napi_key = "{REAL_KEY}"\n')
    cred.chmod(0o600)
    vm = EgressVM(d, home)
    vm.up = up
    vm.raw_port = raw.getsockname()[1]
    vm.dir = d
    yield vm
    assert vm.stop() == 0
    raw.close()
    up.close()
    assert not procs_mentioning(str(d)), "QEMU or capsem-vm left behind"


def out(r):
    return r.stdout.decode(errors="replace")


def ledger_now(vm, table, where="1=1", args=(), strict=False):
    """Rows of a ledger table as they are now ([] while the file cannot be read; with strict,
    an unreadable file is an error: an absence check must not pass on it)."""
    try:
        db = sqlite3.connect(f"file:{vm.ledger}?mode=ro", uri=True, timeout=5)
        db.row_factory = sqlite3.Row
        rows = [dict(r) for r in db.execute(f"SELECT * FROM {table} WHERE {where}", args)]
        db.close()
        return rows
    except sqlite3.Error:
        if strict:
            raise
        return []


def ledger_rows(vm, table, where="1=1", args=(), timeout=60):
    """Rows of a ledger table, waiting for the batched writer to write at least one."""
    return wait_for(lambda: ledger_now(vm, table, where, args), timeout,
                    f"ledger rows in {table} where {where} {args}")


def guest_python(vm, script, *args, timeout=300):
    """Run a Python script in the guest (as argv: no shell quoting); the Result."""
    return cc.run(vm.vsock, ["/usr/bin/python3", "-c", script, *args], io_timeout=timeout)


def test_only_lo_and_the_dummy(net):
    r = net.sh("ls /sys/class/net | sort | tr '\\n' ' '")
    assert out(r).split() == ["capsem0", "lo"]


def test_dns_fake_ip_for_allowed_nxdomain_for_blocked(net):
    r = net.sh("getent hosts upstream.test")
    assert r.status == 0, out(r)
    assert re.match(r"198\.1[89]\.\d+\.\d+\s+upstream\.test", out(r)), out(r)
    t = time.monotonic()
    r = net.sh("getent hosts blocked.test")
    assert r.status != 0 and (time.monotonic() - t) < 10
    rows = ledger_rows(net, "dns", "qname = ?", ("blocked.test",))
    assert rows[0]["decision"] == "block" and rows[0]["rcode"] == 3


def test_https_get_trusts_the_capsem_ca(net):
    r = net.sh("curl -sS --max-time 60 https://upstream.test/hello")
    assert r.status == 0, r.stderr
    assert out(r) == "hello from upstream\n"


def test_python_and_node_clients(net):
    r = net.sh("python3 -c \"import urllib.request as u; "
               "print(u.urlopen('https://upstream.test/hello', timeout=60).read().decode(), end='')\"")
    assert r.status == 0, r.stderr
    assert out(r) == "hello from upstream\n"
    r = net.sh("node -e \"fetch('https://upstream.test/hello').then(r => r.text())"
               ".then(t => process.stdout.write(t))\"")
    assert r.status == 0, r.stderr
    assert out(r) == "hello from upstream\n"


def test_post_body_arrives(net):
    r = net.sh("curl -sS --max-time 60 -X POST --data-binary 'a=1&b=two' https://upstream.test/echo")
    assert r.status == 0, r.stderr
    doc = json.loads(out(r))
    assert doc["method"] == "POST" and doc["body"] == "a=1&b=two"


def test_blocked_method_gets_403_naming_the_rule(net):
    r = net.sh("curl -sS --max-time 60 -X DELETE -w '\\n%{http_code}' https://upstream.test/echo")
    body, code = out(r).rsplit("\n", 1)
    assert code == "403"
    doc = json.loads(body)
    assert doc["rule"] == "no-delete" and doc["layer"] == "user"
    assert not any(m == "DELETE" for m, _, _ in net.up.stats.requests)
    rows = ledger_rows(net, "net", "method = 'DELETE'")
    assert rows[0]["decision"] == "block" and rows[0]["rule"] == "no-delete"


def test_blocked_path_gets_403(net):
    r = net.sh("curl -sS --max-time 60 -w '\\n%{http_code}' https://upstream.test/admin/x")
    body, code = out(r).rsplit("\n", 1)
    assert code == "403" and json.loads(body)["rule"] == "no-admin"


def test_blocked_domain_port_and_direct_ip_fail_at_once(net):
    for url, codes in (("https://blocked.test/", (6,)),
                       ("https://upstream.test:8443/", (7, 35, 52, 56)),
                       ("https://93.184.216.34/", (7, 35, 52, 56))):
        t = time.monotonic()
        r = net.sh(f"curl -sS --max-time 30 {url}")
        assert r.status in codes, (url, r.status, r.stderr)
        assert time.monotonic() - t < 10, f"{url} took {time.monotonic() - t:.1f} s"
    rows = ledger_rows(net, "net", "dst_ip = '93.184.216.34'")
    assert rows[0]["decision"] == "block" and rows[0]["rule"] == "direct-ip"


def test_udp_is_rejected_at_once(net):
    r = net.sh("python3 -c \"\nimport socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
               "s.settimeout(5)\ns.connect(('1.2.3.4', 9999))\n"
               "try:\n  s.send(b'x')\n  s.recv(10)\n  print('got')\nexcept ConnectionRefusedError:\n  print('refused')\n"
               "except PermissionError:\n  print('refused')\n"
               "except OSError as e:\n  print('error', e)\n\"")
    # the guest's netfilter rejects it: ICMP unreachable (ECONNREFUSED) or EPERM on send
    assert out(r).strip() == "refused", out(r)
    assert "timed out" not in out(r)


def test_sse_events_arrive_one_by_one(net):
    script = ("import time, urllib.request as u\n"
              "r = u.urlopen('https://upstream.test/sse?n=5&delay=0.5', timeout=60)\n"
              "t0 = time.monotonic()\n"
              "for line in r:\n"
              "    if line.startswith(b'data:'):\n"
              "        print('%.3f' % (time.monotonic() - t0), flush=True)\n")
    r = net.sh(f"python3 -c \"{script}\"")
    assert r.status == 0, r.stderr
    times = [float(x) for x in out(r).split()]
    assert len(times) == 5
    # buffered, they would arrive together at the end; streamed, about 0.5 s apart
    assert times[-1] - times[0] > 1.2, times


def test_gzip_body_passes_unchanged(net):
    r = net.sh("curl -sS --max-time 60 https://upstream.test/gzip | sha256sum")
    want = __import__("hashlib").sha256(gzip.compress(b"compressed hello " * 100, mtime=0))
    assert out(r).split()[0] == want.hexdigest()


def test_keep_alive_reuses_one_upstream_connection(net):
    before = net.up.stats.connections
    r = net.sh("for i in 1 2 3; do curl -sS --max-time 60 -o /dev/null https://upstream.test/hello; done; "
               "curl -sS --max-time 60 https://upstream.test/hello https://upstream.test/hello")
    assert r.status == 0 and out(r).count("hello from upstream") == 2
    # five requests from four guest connections: the host-wide pool keeps one upstream connection
    assert net.up.stats.connections - before <= 2, net.up.stats.connections - before


def test_websocket_upgrade(net):
    js = ("const ws = new WebSocket('wss://upstream.test/ws');"
          "ws.onopen = () => ws.send('ping');"
          "ws.onmessage = (m) => { console.log(m.data); ws.close(); };"
          "ws.onerror = (e) => { console.log('error', e.message); process.exit(1); };")
    r = net.sh(f"node -e \"{js}\"")
    assert out(r).strip() == "echo: ping", (out(r), r.stderr)


def test_raw_tcp_relay(net):
    script = ("import socket\n"
              "s = socket.create_connection(('raw.test', 7000), timeout=30)\n"
              "s.sendall(b'ping')\n"
              "s.shutdown(socket.SHUT_WR)\n"
              "print(s.recv(100).decode())\n")
    r = net.sh(f"python3 -c \"{script}\"")
    assert out(r).strip() == "raw:ping", (out(r), r.stderr)


def test_credentials_swapped_on_provider_domain_only(net):
    r = net.sh("echo \"$ANTHROPIC_API_KEY\"")
    placeholder = out(r).strip()
    assert placeholder and REAL_KEY not in placeholder
    r = net.sh("curl -sS --max-time 60 -H \"x-api-key: $ANTHROPIC_API_KEY\" "
               "-H 'content-type: application/json' -d '{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":10,"
               "\"messages\":[]}' https://api.anthropic.com/v1/messages")
    assert r.status == 0, r.stderr
    seen = [h for m, p, h in net.up.stats.requests if p == "/v1/messages"]
    assert seen and seen[-1].get("x-api-key") == REAL_KEY
    # the same placeholder to another host stays a placeholder
    echo = "host = 'upstream.test' AND path = '/echo'"
    echoes = len(ledger_now(net, "net", echo))
    r = net.sh("curl -sS --max-time 60 -H \"x-api-key: $ANTHROPIC_API_KEY\" https://upstream.test/echo")
    assert json.loads(out(r))["headers"]["x-api-key"] == placeholder
    # and the real key is nowhere in the guest's view, the VM directory or the ledger
    r = net.sh(f"grep -rl '{REAL_KEY[:30]}' /proc/*/environ /etc /root /tmp 2>/dev/null; true")
    assert out(r).strip() == ""
    # the ledger has the rows of the requests above (the last one's is written after the
    # others): what would leak into it is on disk before the files are searched
    wait_for(lambda: len(ledger_now(net, "net", echo)) > echoes, 60, "the last request's row")
    for root, _, files in os.walk(net.dir):
        for f in files:
            p = os.path.join(root, f)
            if p.startswith(str(net.home)) and f == "credentials":
                continue
            try:
                data = open(p, "rb").read()
            except OSError:
                continue
            assert REAL_KEY.encode() not in data, f"the real key leaked into {p}"


def test_model_call_recorded(net):
    r = net.sh("curl -sS --max-time 60 -H \"x-api-key: $ANTHROPIC_API_KEY\" "
               "-H 'content-type: application/json' -d '{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":10,"
               "\"stream\":true,\"messages\":[]}' https://api.anthropic.com/v1/messages")
    assert r.status == 0 and "message_stop" in out(r), out(r)[-500:]
    rows = ledger_rows(net, "model_call", "provider = 'anthropic' AND streamed = 1")
    assert rows[-1]["input_tokens"] > 0 and rows[-1]["output_tokens"] > 0


def test_policy_reloads_without_restart(net):
    pol = net.home / "user.toml"
    orig = pol.read_text()
    try:
        pol.write_text(orig + '\n[[rule]]\nname = "no-hello"\naction = "block"\n'
                       'hosts = ["upstream.test"]\npaths = ["/hello"]\npriority = 50\n')
        # the proxy looks at the policy files at most every 500 ms, at a request
        r = wait_for(lambda: (lambda r: r if out(r).endswith("403") else None)(
            net.sh("curl -sS --max-time 60 -w '\\n%{http_code}' https://upstream.test/hello")),
            30, "the new rule to take effect")
        assert out(r).endswith("403") and "no-hello" in out(r)
    finally:
        pol.write_text(orig)
    r = wait_for(lambda: (lambda r: r if out(r) == "hello from upstream\n" else None)(
        net.sh("curl -sS --max-time 60 https://upstream.test/hello")), 30,
        "the rule to be gone")
    assert out(r) == "hello from upstream\n"


def upstream_requests_since(vm, n):
    with vm.up.stats.lock:
        return list(vm.up.stats.requests[n:])


def test_encoded_or_case_changed_path_cannot_pass_a_block(net):
    # the policy allows /v1/ and blocks /v1/admin; "%61" is "a" to the upstream (RFC 3986
    # 6.2.2) and some upstreams fold case: the block must hold for both
    before = len(net.up.stats.requests)
    for path, shown in (("/v1/%61dmin", "/v1/admin"), ("/v1/ADMIN", "/v1/ADMIN"),
                        ("/v1/%41dmin/users", "/v1/Admin/users")):
        r = net.sh(f"curl -sS -v --max-time 120 -w '\\n%{{http_code}}' https://upstream.test{path}",
                   timeout=300)
        # curl sent the path as written: whatever changed it is the proxy
        assert f"> GET {path} HTTP/1.1" in r.stderr.decode(errors="replace"), r.stderr
        body, code = out(r).rsplit("\n", 1)
        assert code == "403", (path, out(r))
        doc = json.loads(body)
        assert doc["rule"] == "no-v1-admin" and doc["layer"] == "user", (path, doc)
        assert doc["path"] == shown, (path, doc)  # the normalised path is what was decided
    assert upstream_requests_since(net, before) == []
    rows = ledger_rows(net, "net", "rule = 'no-v1-admin' AND path = '/v1/admin'")
    assert rows[0]["decision"] == "block" and rows[0]["status"] == 403


def test_encoded_unreserved_path_forwarded_normalised(net):
    before = len(net.up.stats.requests)
    r = net.sh("curl -sS -v --max-time 120 -w '\\n%{http_code}' https://upstream.test/v1/%7Euser",
               timeout=300)
    assert "> GET /v1/%7Euser HTTP/1.1" in r.stderr.decode(errors="replace"), r.stderr
    # allowed by v1-api; the upstream has no such page, so its own 404 comes back
    assert out(r) == "not found\n\n404", (out(r), r.stderr)
    seen = upstream_requests_since(net, before)
    assert [(m, p) for m, p, _ in seen] == [("GET", "/v1/~user")], seen
    rows = ledger_rows(net, "net", "path = '/v1/~user'")
    assert rows[0]["decision"] == "allow" and rows[0]["rule"] == "v1-api", rows


# Raw HTTPS from the guest: curl (and Python's http.client) would send one Host. Each request is
# sent on a fresh connection; prints the status line and the body of each answer, as JSON.
RAW_HEADS_SCRIPT = r"""
import json, socket, ssl

def ask(host, head):
    ctx = ssl.create_default_context()
    s = ctx.wrap_socket(socket.create_connection((host, 443), timeout=240),
                        server_hostname=host)
    s.sendall(head)
    data = b""
    while b"\r\n\r\n" not in data:
        b = s.recv(65536)
        if not b:
            break
        data += b
    head_, _, body = data.partition(b"\r\n\r\n")
    lines = head_.split(b"\r\n")
    n = 0
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v)
    while len(body) < n:
        b = s.recv(65536)
        if not b:
            break
        body += b
    s.close()
    return [lines[0].decode("latin-1"), body.decode("latin-1")]

print(json.dumps([
    ask("upstream.test", b"GET /echo HTTP/1.1\r\nHost: upstream.test\r\nHost: blocked.test\r\n"
                         b"Connection: close\r\n\r\n"),
    ask("upstream.test", b"GET /echo HTTP/1.1\r\nUser-Agent: no-host\r\nConnection: close\r\n\r\n"),
    ask("upstream.test", b"GET /echo HTTP/1.1\r\nHost: upstream.test\r\nConnection: close\r\n\r\n"),
]))
"""


def test_duplicate_host_or_no_host_is_400_and_never_upstream(net):
    before = len(net.up.stats.requests)
    r = guest_python(net, RAW_HEADS_SCRIPT)
    assert r.status == 0, (out(r), r.stderr)
    dup, nohost, ok = json.loads(out(r))
    for status, body in (dup, nohost):
        assert status.startswith("HTTP/1.1 400 "), (status, body)
        assert json.loads(body)["error"] == "malformed HTTP request", body
    # the same connection setup with one Host goes through: the 400s were the heads' doing
    assert ok[0].startswith("HTTP/1.1 200 "), ok
    assert json.loads(ok[1])["headers"]["Host"] == "upstream.test"
    seen = upstream_requests_since(net, before)
    assert len(seen) == 1 and seen[0][2].get("Host") == "upstream.test", seen
    where = "rule = 'malformed-request' AND host = 'upstream.test'"
    rows = wait_for(lambda: (lambda x: len(x) >= 2 and x)(ledger_now(net, "net", where)), 60,
                    "a malformed-request row for each 400")
    assert all(x["decision"] == "block" and x["scheme"] == "https" for x in rows), rows


# In the guest: the address of each name, or the getaddrinfo error number (EAI_NONAME, -2, is
# what NXDOMAIN becomes; a failing or slow resolver would give EAI_AGAIN instead).
RESOLVE_SCRIPT = r"""
import json, socket, sys
res = {}
for name in sys.argv[1:]:
    try:
        res[name] = socket.gethostbyname(name)
    except socket.gaierror as e:
        res[name] = e.errno
print(json.dumps(res))
"""


def test_wildcard_stands_for_one_label(net):
    one, two = "a.wild.test", "c2vjcmv0.a.wild.test"  # names are recorded in lower case
    r = guest_python(net, RESOLVE_SCRIPT, one, two, "x.y.wild.test")
    assert r.status == 0, (out(r), r.stderr)
    res = json.loads(out(r))
    assert re.fullmatch(r"198\.1[89]\.\d+\.\d+", str(res[one])), res
    assert res[two] == socket.EAI_NONAME and res["x.y.wild.test"] == socket.EAI_NONAME, res
    rows = ledger_rows(net, "dns", "qname = ?", (two,))
    assert all(x["decision"] == "block" and x["rcode"] == 3 for x in rows), rows
    # the deep name cannot be connected to (curl: "could not resolve host")...
    r = net.sh(f"curl -sS --max-time 120 https://{two}/hello", timeout=300)
    assert r.status == 6, (r.status, r.stderr)
    # ...the one-label name can (the policy sends it to the test upstream)
    r = net.sh(f"curl -sS --max-time 120 https://{one}/hello", timeout=300)
    assert r.status == 0 and out(r) == "hello from upstream\n", (out(r), r.stderr)
    # rows are written in order: once the allowed connection's row is there, a row for the
    # deep name would be too
    rows = ledger_rows(net, "net", "host = ?", (one,))
    assert rows[-1]["decision"] == "allow" and rows[-1]["rule"] == "wild", rows
    assert ledger_now(net, "net", "host LIKE ?", ("%" + two + "%",), strict=True) == []
