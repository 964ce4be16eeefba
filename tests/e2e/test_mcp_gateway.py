"""The per-VM MCP gateway (src/gateway) and the guest relay capsem-mcp-relay (src/guest/mcprelay.c).

Host side: the gateway runs alone in gateway-front on a Unix socket (the socket capsem-vm would
put at <vmdir>/vsock_5003), with real MCP servers written for the tests (tests/e2e/mcp_servers:
a stdio server and a streamable-HTTP server, JSON and SSE flavours) and a local web server for
the built-in fetch/grep/headers. The official TypeScript SDK client (tests/e2e/mcpsdk.py) talks
to it through the relay built for the host (capsem-agent-host run as capsem-mcp-relay --unix);
raw JSON lines cover the error cases. One VM test on the minimal image runs the musl relay in
the guest against capsem-vm's own gateway, and against a gateway that the test kills.
"""
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.abspath(os.environ.get("CAPSEM_BUILD", os.path.join(ROOT, "build")))
FRONT = os.path.join(BUILD, "tests", "helpers", "gateway-front")
AGENT_HOST = os.path.join(BUILD, "src", "guest", "capsem-agent-host")
SERVERS = os.path.join(HERE, "mcp_servers")
STDIO_SERVER = os.path.join(SERVERS, "stdio_server.py")
HTTP_SERVER = os.path.join(SERVERS, "http_server.py")

PLAIN = b"".join(b"line %d\n" % i for i in range(1, 2001))
PAGE = (b"<html><head><title>T</title><script>var hidden = 1;</script></head><body>"
        b"<h1>Capsem test page</h1><p>first line</p><p>needle one</p><ul><li>item</li></ul>"
        b"<p>the NEEDLE again</p></body></html>")


# ---- helpers ----

class Web:
    """A local web server: /page.html (HTML), /plain.txt, /bin (binary), /redirect. .paths: the
    request targets it read, in order."""

    def __init__(self):
        paths = self.paths = []

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_HEAD(self):
                self.do_GET(head=True)

            def do_GET(self, head=False):
                paths.append(self.path)
                routes = {"/page.html": ("text/html; charset=utf-8", PAGE),
                          "/plain.txt": ("text/plain", PLAIN),
                          "/bin": ("application/octet-stream", b"\x00\x01\x02"),
                          "/bad.html": ("text/html", b"<p>ok \xff\xfe bad \x00 nul</p>")}
                if self.path == "/slow":
                    time.sleep(20)  # the point: a page that takes 20 s
                if self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", "http://elsewhere.test/")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                ctype, body = routes.get(self.path, ("text/plain", None))
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Capsem-Test", "yes")
                self.end_headers()
                if not head:
                    self.wfile.write(body)

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def start_http_server(*args):
    p = subprocess.Popen([sys.executable, HTTP_SERVER, *args], stdout=subprocess.PIPE,
                         text=True)
    line = p.stdout.readline()
    assert line.startswith("port "), line
    return p, int(line.split()[1])


class Gateway:
    """gateway-front on a Unix socket with a config and a user policy in a private home."""

    def __init__(self, tmp, config, user_policy="", ledger=True, workspace=None):
        self.tmp = tmp
        self.home = tmp / "home"
        self.home.mkdir(exist_ok=True)
        (self.home / "user.toml").write_text(user_policy)
        self.config = tmp / "mcp.toml"
        self.config.write_text(config)
        self.sock = str(tmp / "gw.sock")
        self.ledger = str(tmp / "session.db") if ledger else None
        args = [FRONT, "--socket", self.sock, "--config", str(self.config), "--home",
                str(self.home)]
        if self.ledger:
            args += ["--ledger", self.ledger]
        if workspace:
            args += ["--workspace", str(workspace)]
        self.err = open(tmp / "gateway.log", "w")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.err, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(20)
        self.err.close()
        return self.proc.returncode

    def log(self):
        return (self.tmp / "gateway.log").read_text()


class Raw:
    """Newline-delimited JSON-RPC straight to the gateway's socket."""

    def __init__(self, path, preamble=True):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.s.settimeout(30)
        self.f = self.s.makefile("rwb")
        self.next_id = 100
        if preamble:
            self.line(b"CAPSEM-MCP-RELAY/1 pid=4242 comm=pytest")

    def line(self, b):
        self.f.write(b + b"\n")
        self.f.flush()

    def send(self, msg):
        self.line(json.dumps(msg).encode())

    def recv(self):
        line = self.f.readline()
        assert line, "the gateway closed the session"
        return json.loads(line)

    def request(self, method, params=None, id=None):
        if id is None:
            self.next_id += 1
            id = self.next_id
        m = {"jsonrpc": "2.0", "id": id, "method": method}
        if params is not None:
            m["params"] = params
        self.send(m)
        return id

    def call(self, method, params=None):
        id = self.request(method, params)
        r = self.recv()
        assert r["id"] == id, r
        return r

    def tool(self, name, args=None):
        return self.call("tools/call", {"name": name, "arguments": args or {}})

    def close(self):
        self.s.close()


def text_of(resp):
    res = resp["result"]
    return "".join(c["text"] for c in res["content"] if c["type"] == "text")


def pids_in(path):
    try:
        return [int(x) for x in open(path).read().split()]
    except OSError:
        return []


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def ledger_rows(path, sql):
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def ledger_now(path, sql):
    """ledger_rows, or [] while the file cannot be read yet."""
    try:
        return ledger_rows(path, sql)
    except sqlite3.Error:
        return []


def ledger_wait(path, sql, more_than=0, timeout=60):
    """ledger_rows once there are more than more_than (the writer commits in batches)."""
    return wait_for(lambda: (lambda x: x if len(x) > more_than else None)(ledger_now(path, sql)),
                    timeout, f"ledger rows: {sql}")


def tool_names(sock):
    r = Raw(sock)
    try:
        return [t["name"] for t in r.call("tools/list")["result"]["tools"]]
    finally:
        r.close()


def wait_dead(pid, timeout):
    try:
        wait_for(lambda: not alive(pid), timeout, f"{pid} to exit")
    except AssertionError:
        pass


POLICY = """
[[rule]]
name = "local-test"
action = "allow"
hosts = ["127.0.0.1"]

[[tool_rule]]
name = "no-add"
action = "block"
server = "test"
tool = "add"

[[tool_rule]]
name = "no-big-anywhere"
action = "block"
tool = "big"
"""


@pytest.fixture(scope="module")
def web():
    w = Web()
    yield w
    w.close()


@pytest.fixture(scope="module")
def http_servers():
    j, jport = start_http_server()
    s, sport = start_http_server("--sse")
    yield jport, sport
    for p in (j, s):
        p.terminate()
        p.wait(10)


@pytest.fixture(scope="module")
def gw(tmp_path_factory, http_servers, web):
    tmp = tmp_path_factory.mktemp("gw")
    jport, sport = http_servers
    pidfile = tmp / "stdio.pids"
    log = tmp / "stdio.log"
    ws = tmp / "workspace"
    ws.mkdir()
    (ws / "hello.txt").write_text("hello workspace\n")
    (ws / "sub").mkdir()
    os.symlink("/etc", ws / "etc-link")
    os.symlink("/etc/hostname", ws / "hostname-link")
    config = f"""
[limits]
max_pending = 4

[servers.test]
command = "{sys.executable}"
args = ["{STDIO_SERVER}", "--pidfile", "{pidfile}", "--log", "{log}"]
timeout = 3

[servers.http]
url = "http://127.0.0.1:{jport}/mcp"

[servers.sse]
url = "http://127.0.0.1:{sport}/mcp"

[servers.denied]
url = "http://localhost:{jport}/mcp"

[builtin]
workspace = "{ws}"
"""
    # "localhost" is allowed on the web server's port only: the policy lets it through, the
    # gateway's own guard must still refuse to connect a name to this host's loopback
    g = Gateway(tmp, config, POLICY + f"""
[[rule]]
name = "localhost-web"
action = "allow"
hosts = ["localhost"]
ports = [{web.port}]
""")
    g.pidfile, g.stdio_log, g.ws = pidfile, log, ws
    # wait until the configured servers are up (their tools are listed)
    try:
        wait_for(lambda: {"test__echo", "http__echo", "sse__echo"} <= set(tool_names(g.sock)),
                 60, "the configured servers' tools")
    except AssertionError:
        pass  # the tests say which server is missing
    yield g
    assert g.stop() == 0
    for pid in pids_in(pidfile):
        assert not alive(pid), f"stdio server {pid} left behind"


# ---- the SDK client through the relay ----

def relay_cmd(tmp, sock):
    """capsem-agent-host dispatches on argv[0]: a link named capsem-mcp-relay runs the relay."""
    link = tmp / "capsem-mcp-relay"
    if not link.exists():
        os.symlink(AGENT_HOST, link)
    return [str(link), "--unix", sock]


def test_sdk_client_through_relay(gw, web, tmp_path):
    from mcpsdk import CLIENT, run_client
    steps = [
        {"op": "list_tools"},
        {"op": "call", "name": "test__echo", "arguments": {"text": "hello from the SDK"}},
        {"op": "call", "name": "http__add", "arguments": {"a": 2, "b": 40}},
        {"op": "call", "name": "sse__echo", "arguments": {"text": "over SSE"}},
        {"op": "call", "name": "capsem__fetch", "arguments": {"url": web.url("/page.html")}},
        {"op": "call", "name": "capsem__grep",
         "arguments": {"url": web.url("/page.html"), "pattern": "needle"}},
        {"op": "call", "name": "capsem__headers", "arguments": {"url": web.url("/page.html")}},
        {"op": "call", "name": "test__add", "arguments": {"a": 1, "b": 2}},
        {"op": "cancel_call", "name": "test__slow", "arguments": {"seconds": 20},
         "after_ms": 300},
        {"op": "ping"},
    ]
    sf = tmp_path / "steps.json"
    sf.write_text(json.dumps(steps))
    p = run_client(CLIENT, [str(sf), "--", *relay_cmd(tmp_path, gw.sock)], timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    conn, tools, echo, add, sse, fetch, grep, headers, blocked, cancel, ping = out[:11]
    assert conn["result"]["server"]["name"] == "capsem-gateway"
    names = {t["name"] for t in tools["result"]["tools"]}
    assert {"capsem__fetch", "capsem__grep", "capsem__headers", "capsem__list_files",
            "capsem__read_file", "capsem__write_file", "test__echo", "test__slow",
            "http__echo", "sse__echo"} <= names
    # blocked tools are hidden; the denied-URL server is absent
    assert "test__add" not in names and "test__big" not in names and "http__big" not in names
    assert not any(n.startswith("denied__") for n in names)
    assert echo["result"]["content"][0]["text"] == "hello from the SDK"
    assert add["result"]["content"][0]["text"] == "42"
    assert sse["result"]["content"][0]["text"] == "over SSE"
    ft = fetch["result"]["content"][0]["text"]
    assert "# Capsem test page" in ft and "- item" in ft and "hidden" not in ft
    gt = grep["result"]["content"][0]["text"]
    assert "Matches: 2" in gt and ": needle one" in gt and ": the NEEDLE again" in gt
    ht = headers["result"]["content"][0]["text"]
    assert "Status: 200" in ht and "X-Capsem-Test: yes" in ht
    assert not blocked["ok"] and blocked["error"]["code"] == -32001
    assert "no-add" in blocked["error"]["message"]
    assert not cancel["ok"], cancel
    assert ping["ok"]
    # the server saw the cancellation the SDK sent
    wait_for(lambda: "notifications/cancelled" in gw.stdio_log.read_text(), 10,
             "the server to see the cancellation")


# ---- raw JSON: protocol errors and limits ----

def test_initialize_and_protocol_errors(gw):
    r = Raw(gw.sock)
    init = r.call("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                 "clientInfo": {"name": "raw", "version": "1"}})
    assert init["result"]["protocolVersion"] == "2025-06-18"
    assert "tools" in init["result"]["capabilities"]
    old = r.call("initialize", {"protocolVersion": "2024-11-05"})
    assert old["result"]["protocolVersion"] == "2024-11-05"
    r.send({"jsonrpc": "2.0", "method": "notifications/initialized"})  # never answered
    r.line(b"{not json")
    e = r.recv()
    assert e["id"] is None and e["error"]["code"] == -32700
    r.line(b'{"jsonrpc":"1.0","id":5,"method":"x"}')
    e = r.recv()
    assert e["error"]["code"] == -32600
    r.line(b'[{"jsonrpc":"2.0","id":6,"method":"ping"}]')
    assert r.recv()["error"]["code"] == -32600  # batches were removed in 2025-06-18
    assert r.call("resources/list")["error"]["code"] == -32601
    assert r.call("tools/call", {"arguments": {}})["error"]["code"] == -32602
    assert r.call("tools/call", {"name": "nounderscore"})["error"]["code"] == -32602
    assert r.call("tools/call", {"name": "nosuch__tool"})["error"]["code"] == -32602
    assert r.call("tools/call", {"name": "test__nosuch"})["error"]["code"] == -32602
    assert r.call("tools/call", {"name": "test__echo", "arguments": [1]})["error"][
        "code"] == -32602
    # a message over 4 MiB is dropped with -32600 and the session goes on
    r.line(b'{"jsonrpc":"2.0","id":7,"method":"ping","params":{"pad":"' + b"x" * (5 << 20)
           + b'"}}')
    e = r.recv()
    assert e["error"]["code"] == -32600 and "too large" in e["error"]["message"]
    assert r.call("ping")["result"] == {}
    # responses from the agent are ignored; the session still works
    r.send({"jsonrpc": "2.0", "id": 999, "result": {}})
    assert text_of(r.tool("test__echo", {"text": "still here"})) == "still here"
    r.close()


def test_denied_tool_names_the_rule(gw):
    r = Raw(gw.sock)
    e = r.tool("test__add", {"a": 1, "b": 2})["error"]
    assert e["code"] == -32001
    assert e["data"] == {"rule": "no-add", "layer": "user", "server": "test", "tool": "add"}
    e = r.tool("http__big", {"n": 5})["error"]  # a rule with only a tool glob
    assert e["code"] == -32001 and e["data"]["rule"] == "no-big-anywhere"
    r.close()


def test_denied_fetch_domain(gw, web):
    r = Raw(gw.sock)
    e = r.tool("capsem__fetch", {"url": "https://example.com/"})["error"]
    assert e["code"] == -32001 and e["data"]["rule"] == "default"
    e = r.tool("capsem__fetch", {"url": f"http://localhost:{web.port + 1}/page.html"})["error"]
    assert e["code"] == -32001  # the policy names localhost on the web port only
    # allowed by name, but the name leads to loopback: the guard refuses to connect
    res = r.tool("capsem__fetch", {"url": f"http://localhost:{web.port}/page.html"})["result"]
    assert res["isError"] and "Capsem test page" not in res["content"][0]["text"], res
    res = r.tool("capsem__fetch", {"url": "file:///etc/passwd"})["result"]
    assert res["isError"]
    # a redirect is not followed: the model must ask for the new URL (decided again)
    res = r.tool("capsem__fetch", {"url": web.url("/redirect")})["result"]
    assert res["isError"] and "elsewhere.test" in res["content"][0]["text"]
    res = r.tool("capsem__fetch", {"url": web.url("/bin")})["result"]
    assert res["isError"] and "not text" in res["content"][0]["text"]
    r.close()


def test_fetch_paging(gw, web):
    r = Raw(gw.sock)
    t = text_of(r.tool("capsem__fetch", {"url": web.url("/plain.txt"), "max_length": 100}))
    assert "Showing: 0..100" in t and "offset=100" in t and t.endswith(PLAIN[:100].decode())
    t = text_of(r.tool("capsem__fetch", {"url": web.url("/plain.txt"), "offset": 100,
                                          "max_length": 8}))
    assert "Showing: 100..108" in t and t.endswith(PLAIN[100:108].decode())
    r.close()


def test_fetch_invalid_utf8_page(gw, web):
    # a hostile page's invalid UTF-8 and NUL bytes become U+FFFD: the reply always serialises
    r = Raw(gw.sock)
    t = text_of(r.tool("capsem__fetch", {"url": web.url("/bad.html")}))
    assert "ok \ufffd\ufffd bad \ufffd nul" in t, t
    assert r.call("ping")["result"] == {}
    r.close()


def test_http_server_denied_by_policy(gw):
    r = Raw(gw.sock)
    e = r.tool("denied__echo", {"text": "x"})["error"]
    assert e["code"] == -32603 and "blocked by the network policy" in e["message"], e
    r.close()
    assert "denied unavailable: blocked by the network policy" in gw.log()


def test_timeout_cancels_downstream(gw):
    r = Raw(gw.sock)
    n0 = gw.stdio_log.read_text().count("notifications/cancelled")
    t0 = time.monotonic()
    e = r.tool("test__slow", {"seconds": 30})["error"]
    assert e["code"] == -32002 and "timed out" in e["message"]
    assert 2.5 < time.monotonic() - t0 < 10
    wait_for(lambda: gw.stdio_log.read_text().count("notifications/cancelled") > n0, 10,
             "the server to see the cancellation")
    r.close()


def test_pending_limit(gw):
    r = Raw(gw.sock)
    ids = [r.request("tools/call", {"name": "test__slow", "arguments": {"seconds": 1}})
           for _ in range(5)]
    got = {}
    for _ in range(5):
        m = r.recv()
        got[m["id"]] = m
    assert got[ids[4]]["error"]["code"] == -32003
    assert all("result" in got[i] for i in ids[:4]), got
    r.close()


def test_crashing_server(gw):
    r = Raw(gw.sock)
    before = pids_in(gw.pidfile)
    calls = gw.stdio_log.read_text().count("tools/call")
    slow = r.request("tools/call", {"name": "test__slow", "arguments": {"seconds": 20}})
    wait_for(lambda: gw.stdio_log.read_text().count("tools/call") > calls, 10,
             "the slow call to reach the server")
    crash = r.request("tools/call", {"name": "test__crash"})
    got = {}
    for _ in range(2):
        m = r.recv()
        got[m["id"]] = m
    assert got[slow]["error"]["code"] == -32603 and got[crash]["error"]["code"] == -32603
    # the gateway stays up (built-ins answer) and restarts the server with back-off
    assert "hello.txt" in text_of(r.tool("capsem__list_files", {}))
    def echoed():
        m = r.tool("test__echo", {"text": "back"})
        assert "result" in m or m["error"]["code"] == -32603, m
        return m if "result" in m else None
    m = wait_for(echoed, 30, "the restarted server to answer")
    assert text_of(m) == "back"
    assert len(pids_in(gw.pidfile)) == len(before) + 1
    r.close()


def test_workspace_files(gw):
    r = Raw(gw.sock)
    t = text_of(r.tool("capsem__list_files", {}))
    assert "hello.txt\n" in t and "sub/\n" in t
    assert "hello workspace" in text_of(r.tool("capsem__read_file", {"path": "hello.txt"}))
    assert "wrote 5 bytes" in text_of(r.tool("capsem__write_file",
                                             {"path": "sub/new.txt", "content": "12345"}))
    assert (gw.ws / "sub" / "new.txt").read_text() == "12345"
    r.tool("capsem__write_file", {"path": "sub/new.txt", "content": "6", "append": True})
    assert (gw.ws / "sub" / "new.txt").read_text() == "123456"
    assert text_of(r.tool("capsem__read_file", {"path": "./sub//new.txt", "offset": 2,
                                                "max_length": 3})) == "345"
    for bad in ("../escape.txt", "/etc/passwd", "sub/../../x", "etc-link/passwd",
                "hostname-link"):
        for tool, args in (("read_file", {"path": bad}),
                           ("write_file", {"path": bad, "content": "x"})):
            res = r.tool("capsem__" + tool, args)["result"]
            assert res["isError"], (tool, bad, res)
    assert not (gw.tmp / "escape.txt").exists()
    assert r.tool("capsem__list_files", {"path": "etc-link"})["result"]["isError"]
    # no symlink is followed, even one that stays inside (the guest could swap its target
    # for a directory outside between two calls)
    os.symlink("sub", gw.ws / "inside-link")
    res = r.tool("capsem__read_file", {"path": "inside-link/new.txt"})["result"]
    assert res["isError"] and "symbolic link" in res["content"][0]["text"], res
    r.close()


def test_ledger_records(gw):
    adds = "SELECT id FROM tool_call WHERE tool = 'add'"
    n_adds = len(ledger_now(gw.ledger, adds))  # earlier tests' calls
    r = Raw(gw.sock)
    r.call("tools/list")
    r.tool("test__echo", {"text": "for the ledger"})
    r.tool("test__add", {"a": 1, "b": 1})
    r.close()
    # the ledger writer batches: the last call's row (written after the others) is there
    ledger_wait(gw.ledger, adds, n_adds)
    rows = ledger_rows(gw.ledger, "SELECT server, tool, args_bytes, result_bytes, decision, "
                                  "rule, error FROM tool_call ORDER BY id")
    assert ("*", None) in [(s, t) for s, t, *_ in rows]  # tools/list
    echo = [x for x in rows if x[1] == "echo" and x[2] == len('{"text": "for the ledger"}') - 1]
    assert echo and echo[-1][4] == "allow" and echo[-1][3] > 0 and echo[-1][6] is None
    add = [x for x in rows if x[1] == "add"]
    assert add and add[-1][4] == "block" and add[-1][5] == "no-add" and "no-add" in add[-1][6]
    pol = ledger_rows(gw.ledger, "SELECT boundary, subject, action, rule, layer FROM policy "
                                 "WHERE boundary = 'tool' AND subject = 'test__add'")
    assert pol and pol[-1][2:] == ("block", "no-add", "user")


def test_urls_sent_with_the_path_decided(tmp_path, http_servers, web):
    """The path of a URL is decided normalised (as the egress proxy forwards it: "%70" is "p")
    and sent in that form: the server reads the path the policy decided on, not another
    spelling of it. The web server and the HTTP MCP server answer their exact paths only."""
    jport, _ = http_servers
    g = Gateway(tmp_path, f"""
[servers.enc]
url = "http://127.0.0.1:{jport}/%6dcp"
""", POLICY + """
[[rule]]
name = "no-secret"
action = "block"
hosts = ["127.0.0.1"]
paths = ["/secret"]
priority = 10
""")
    try:
        r = Raw(g.sock)
        # the HTTP MCP server serves /mcp only: it is up because "/%6dcp" was sent as "/mcp"
        try:
            wait_for(lambda: "enc__echo" in [t["name"] for t in
                                             r.call("tools/list")["result"]["tools"]],
                     120, "the HTTP server's tools")
        except AssertionError:
            pass  # the call below says what went wrong
        assert text_of(r.tool("enc__echo", {"text": "via /mcp"})) == "via /mcp", g.log()
        before = len(web.paths)
        t = text_of(r.tool("capsem__fetch", {"url": web.url("/%70age.html")}))
        assert "# Capsem test page" in t, t
        t = text_of(r.tool("capsem__headers", {"url": web.url("/pl%61in.txt")}))
        assert "Status: 200" in t and "X-Capsem-Test: yes" in t, t
        # other escapes keep their encoding, upper-cased; the query is sent as written
        r.tool("capsem__headers", {"url": web.url("/caf%c3%a9?q=%61%2f")})
        assert web.paths[before:] == ["/page.html", "/plain.txt", "/caf%C3%A9?q=%61%2f"]
        # a block cannot be passed by encoding: the normalised path is decided and recorded
        e = r.tool("capsem__fetch", {"url": web.url("/%73ecret/x")})["error"]
        assert e["code"] == -32001 and e["data"]["rule"] == "no-secret", e
        assert web.paths[before + 3:] == []
        r.close()
        subject = f"GET 127.0.0.1:{web.port}/secret/x"
        pol = ledger_wait(g.ledger, "SELECT action, rule FROM policy WHERE boundary = "
                                    f"'http' AND subject = '{subject}'")
        assert pol == [("block", "no-secret")]
    finally:
        assert g.stop() == 0


# ---- the relay: the gateway goes away with requests in flight ----

def test_relay_gateway_killed(tmp_path):
    g = Gateway(tmp_path, f"""
[servers.test]
command = "{sys.executable}"
args = ["{STDIO_SERVER}", "--pidfile", "{tmp_path / 'pids'}"]
""", POLICY, ledger=False)
    try:
        wait_for(lambda: "test__slow" in tool_names(g.sock), 30, "the stdio server's tools")
        p = subprocess.Popen(relay_cmd(tmp_path, g.sock), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        reqs = [{"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                 "params": {"name": "test__slow", "arguments": {"seconds": 30}}},
                {"jsonrpc": "2.0", "id": "two", "method": "tools/call",
                 "params": {"name": "test__slow", "arguments": {"seconds": 30}}},
                {"jsonrpc": "2.0", "id": 3, "method": "ping"}]
        for m in reqs:
            p.stdin.write((json.dumps(m) + "\n").encode())
        p.stdin.flush()
        first = json.loads(p.stdout.readline())
        assert first == {"jsonrpc": "2.0", "id": 3, "result": {}}
        g.proc.send_signal(signal.SIGKILL)
        g.proc.wait(10)
        out, _ = p.communicate(timeout=20)  # the relay exits on its own
        answers = {m["id"]: m for m in map(json.loads, out.decode().splitlines())}
        assert set(answers) == {1, "two"}
        for m in answers.values():
            assert m["error"] == {"code": -32603, "message": "capsem MCP gateway unavailable"}
        assert p.returncode == 1
    finally:
        g.stop(signal.SIGKILL)
        for pid in pids_in(tmp_path / "pids"):
            wait_dead(pid, 1)  # its gateway died with SIGKILL: stdin EOF ends it
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_stop_abandons_transfers(tmp_path, web):
    """A gateway that stops does not wait for a built-in fetch in flight: its worker thread
    abandons the transfer (the page takes 20 s)."""
    g = Gateway(tmp_path, "", POLICY, ledger=False)
    r = Raw(g.sock)
    r.request("tools/call", {"name": "capsem__fetch", "arguments": {"url": web.url("/slow")}})
    wait_for(lambda: "/slow" in web.paths, 10, "the fetch to reach the web server")
    t0 = time.monotonic()
    assert g.stop() == 0
    assert time.monotonic() - t0 < 5
    r.close()


def test_relay_without_gateway(tmp_path):
    p = subprocess.run(relay_cmd(tmp_path, str(tmp_path / "nothing.sock")),
                       input=b'{"jsonrpc":"2.0","id":9,"method":"tools/list"}\n'
                             b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n',
                       capture_output=True, timeout=30)
    assert p.returncode == 1
    assert json.loads(p.stdout) == {"jsonrpc": "2.0", "id": 9, "error": {
        "code": -32603, "message": "capsem MCP gateway unavailable"}}


# ---- in a real microVM (minimal image): the musl relay in the guest ----

def build_initrd(tmp):
    """An initramfs with the guest build's capsem-guest (capsem-mcp-relay -> /init inside)."""
    guest = os.path.join(os.environ.get("CAPSEM_GUEST_BUILD") or os.path.join(ROOT, "build-guest"),
                         "src", "guest", "capsem-guest")
    with open(guest, "rb") as f:
        assert b"CAPSEM-MCP-RELAY/1" in f.read(), \
            f"{guest} predates capsem-mcp-relay: rebuild the guest build (CAPSEM_GUEST_BUILD)"
    builder = os.path.join(BUILD, "src", "builder", "capsem-builder")
    p = subprocess.run([builder, "initramfs", "--guest-bin", guest, "--json"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)["path"]


def test_relay_in_vm(tmp_path):
    import capsem_client as cc
    from conftest import CAPSEM_VM, IMAGE, need_image, procs_mentioning
    need_image()
    initrd = build_initrd(tmp_path)
    home = tmp_path / "capsem-home"
    home.mkdir()
    (home / "user.toml").write_text(POLICY)
    # the server's files beside, not above, $CAPSEM_HOME: a confined MCP server may not write
    # into an ancestor of $CAPSEM_HOME (that would reach it)
    (tmp_path / "srv").mkdir()
    pids = tmp_path / "srv" / "pids"
    (tmp_path / "mcp.toml").write_text(f"""
[servers.test]
command = "{sys.executable}"
args = ["{STDIO_SERVER}", "--pidfile", "{pids}"]
""")
    vmdir = tmp_path / "vm"
    ledger = tmp_path / "session.db"
    vm = subprocess.Popen(
        [CAPSEM_VM, "--vmdir", str(vmdir), "--kernel", os.path.join(IMAGE, "vmlinux"),
         "--initrd", initrd, "--cpus", "2", "--memory", "512M", "--mcp-config",
         str(tmp_path / "mcp.toml"), "--ledger", str(ledger)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, CAPSEM_HOME=str(home)))
    g2 = None
    try:
        ev = json.loads(vm.stdout.readline() or b"{}")
        assert ev.get("event") == "ready", (ev, vm.stderr.read1(65536))
        vs = ev["vsock"]
        # 1. through capsem-vm's own gateway (guest vsock port 5003)
        lines = [
            {"jsonrpc": "2.0", "id": 1, "method": "initialize",
             "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                        "clientInfo": {"name": "busybox", "version": "1"}}},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
             "params": {"name": "test__echo", "arguments": {"text": "from the guest"}}},
            {"jsonrpc": "2.0", "id": 4, "method": "tools/call",
             "params": {"name": "test__add", "arguments": {"a": 1, "b": 2}}},
        ]
        stdin = "".join(json.dumps(m) + "\n" for m in lines).encode()
        def relayed():  # the stdio server may still be starting
            res = cc.run(vs, ["capsem-mcp-relay"], stdin=stdin)
            assert res.status == 0, res
            out = {m["id"]: m for m in map(json.loads, res.stdout.decode().splitlines())}
            names = [t["name"] for t in out[2]["result"]["tools"]]
            return (out, names) if "test__echo" in names else None
        out, names = wait_for(relayed, 60, "the stdio server's tools through the relay")
        assert out[1]["result"]["serverInfo"]["name"] == "capsem-gateway"
        assert "capsem__fetch" in names and "test__echo" in names and "test__add" not in names
        assert out[3]["result"]["content"][0]["text"] == "from the guest"
        assert out[4]["error"]["code"] == -32001
        # 2. a gateway the test kills while two requests are in flight (guest port 5099)
        log = tmp_path / "g2.log"
        g2dir = tmp_path / "g2"
        g2dir.mkdir()
        (g2dir / "home").mkdir()
        (g2dir / "home" / "user.toml").write_text("")
        (g2dir / "mcp.toml").write_text(f"""
[servers.test]
command = "{sys.executable}"
args = ["{STDIO_SERVER}", "--pidfile", "{pids}", "--log", "{log}"]
""")
        g2 = subprocess.Popen([FRONT, "--socket", str(vmdir / "vsock_5099"), "--config",
                               str(g2dir / "mcp.toml"), "--home", str(g2dir / "home")],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert g2.stdout.readline().strip() == "ready"

        def kill_when_called():
            try:
                wait_for(lambda: log.exists() and log.read_text().count("tools/call") >= 2, 60,
                         "both calls to reach the server")
            finally:
                g2.send_signal(signal.SIGKILL)

        k = threading.Thread(target=kill_when_called)
        slow = [{"jsonrpc": "2.0", "id": i, "method": "tools/call",
                 "params": {"name": "test__slow", "arguments": {"seconds": 60}}}
                for i in (10, "eleven")]
        wait_for(lambda: log.exists() and "tools/list" in log.read_text(), 60,
                 "g2's stdio server to list its tools")
        k.start()
        res = cc.run(vs, ["capsem-mcp-relay", "--port", "5099"],
                     stdin="".join(json.dumps(m) + "\n" for m in slow).encode())
        k.join()
        assert res.status == 1, res
        answers = {m["id"]: m for m in map(json.loads, res.stdout.decode().splitlines())}
        assert set(answers) == {10, "eleven"}, res
        for m in answers.values():
            assert m["error"] == {"code": -32603, "message": "capsem MCP gateway unavailable"}
    finally:
        if g2 and g2.poll() is None:
            g2.kill()
            g2.wait()
        if vm.poll() is None:
            vm.send_signal(signal.SIGTERM)
            vm.wait(60)
    assert vm.returncode == 0
    rows = ledger_rows(str(ledger), "SELECT tool, decision, rule FROM tool_call ORDER BY id")
    assert ("echo", "allow", "default") in rows and ("add", "block", "no-add") in rows
    for pid in pids_in(pids):
        # g2 was SIGKILLed: its server sees stdin EOF and exits by itself
        wait_dead(pid, 3)
        assert not alive(pid), f"stdio server {pid} left behind"
    assert not procs_mentioning(str(tmp_path))


def test_sdk_client_in_debian_vm(tmp_path):
    """The official SDK client run by the image's node inside a Debian VM, speaking stdio to
    capsem-mcp-relay, which reaches capsem-vm's gateway over vsock 5003: list, call, a denied
    tool, cancellation and ping, end to end. The SDK and client.mjs come in over a read-only
    9p mount."""
    import capsem_client as cc
    from conftest import CAPSEM_VM, procs_mentioning
    from mcpsdk import CLIENT, sdk_dir
    from test_debian_image import DEBIAN, ensure_debian_image
    ensure_debian_image()
    sdk = sdk_dir()
    home = tmp_path / "capsem-home"
    home.mkdir()
    (home / "user.toml").write_text(POLICY)
    (tmp_path / "srv").mkdir()  # beside $CAPSEM_HOME, not above it (see test_relay_in_vm)
    pids, log = tmp_path / "srv" / "pids", tmp_path / "srv" / "stdio.log"
    (tmp_path / "mcp.toml").write_text(f"""
[servers.test]
command = "{sys.executable}"
args = ["{STDIO_SERVER}", "--pidfile", "{pids}", "--log", "{log}"]
""")
    m = json.load(open(os.path.join(DEBIAN, "manifest.json")))
    vm = subprocess.Popen(
        [CAPSEM_VM, "--vmdir", str(tmp_path / "vm"), "--kernel", os.path.join(DEBIAN, "vmlinux"),
         "--initrd", os.path.join(DEBIAN, "initrd.img"),
         "--rootfs", os.path.join(DEBIAN, m["rootfs"]["file"]), "--cpus", "2", "--memory", "1G",
         "--mount", f"{sdk}:/mnt/node_modules:ro", "--mount", f"{os.path.dirname(CLIENT)}:/mnt/client:ro",
         "--mcp-config", str(tmp_path / "mcp.toml"), "--ledger", str(tmp_path / "session.db")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, CAPSEM_HOME=str(home)))
    try:
        ev = json.loads(vm.stdout.readline() or b"{}")
        assert ev.get("event") == "ready", (ev, vm.stderr.read1(65536))
        steps = [
            {"op": "list_tools"},
            {"op": "call", "name": "test__echo", "arguments": {"text": "from node in the VM"}},
            {"op": "call", "name": "test__add", "arguments": {"a": 1, "b": 2}},
            {"op": "cancel_call", "name": "test__slow", "arguments": {"seconds": 20},
             "after_ms": 500},
            {"op": "ping"},
        ]
        script = ("cat > /tmp/steps.json && MCP_SDK_DIR=/mnt/node_modules "
                  "node /mnt/client/client.mjs /tmp/steps.json -- capsem-mcp-relay")
        def listed():  # the stdio server may still be starting when the VM is up
            r = cc.sh(ev["vsock"], script, stdin=json.dumps(steps).encode(), io_timeout=120)
            assert r.status == 0, r.stderr
            out = json.loads(r.stdout.decode().strip().splitlines()[-1])
            names = {t["name"] for t in out[1]["result"]["tools"]}
            return (out, names) if "test__echo" in names else None
        out, names = wait_for(listed, 90, "the stdio server's tools in the VM")
        conn, tools, echo, add, cancel, ping = out[:6]
        assert conn["result"]["server"]["name"] == "capsem-gateway"
        assert "test__echo" in names and "capsem__fetch" in names and "test__add" not in names
        assert echo["result"]["content"][0]["text"] == "from node in the VM"
        assert not add["ok"] and add["error"]["code"] == -32001
        assert not cancel["ok"] and ping["ok"]
        wait_for(lambda: "notifications/cancelled" in log.read_text(), 10,
                 "the server to see the cancellation")
    finally:
        vm.terminate()
        try:
            vm.wait(60)
        except subprocess.TimeoutExpired:
            vm.kill()
            vm.wait()
    for pid in pids_in(pids):
        assert not alive(pid), f"stdio server {pid} left behind"
    assert not procs_mentioning(str(tmp_path)), "QEMU or capsem-vm left behind"
