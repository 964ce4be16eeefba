"""capsem-gateway end to end: a real capsemd starts it (capsem ui), curl-like requests and raw
WebSockets drive it. Auth (401, the failed-auth limit 429, /token refused to another local
user), foreign Origin and Host refused (DNS rebinding), the route allow-list, the body cap,
capsemd down -> 502, bad WebSocket frames; then a real VM: its terminal (echo hi, resize,
reattach to the same shell with replay) and the status, stats and activity routes."""
import json
import os
import pwd
import re
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import BUILD, CAPSEM, IMAGES, need_image, procs_mentioning, wait_for
from wsclient import WS

GATEWAY = os.path.join(BUILD, "src", "webgw", "capsem-gateway")


def env_for(h):
    e = dict(os.environ, CAPSEM_HOME=str(h), CAPSEM_IMAGES_DIR=IMAGES, CAPSEM_GATEWAY_PORT="0")
    e.pop("CAPSEM_NO_DAEMON", None)
    return e


def cli(h, *args, timeout=300):
    return subprocess.run([CAPSEM, *args], capture_output=True, env=env_for(h), timeout=timeout)


def stop_daemon(h):
    pidfile = h / "run" / "capsemd.pid"
    if not pidfile.exists():
        return
    try:
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or
                 open(f"/proc/{pid}/stat").read().split()[2] == "Z", 30, "capsemd to exit")
    except (ValueError, ProcessLookupError, IndexError, FileNotFoundError):
        pass


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    need_image()
    h = tmp_path_factory.mktemp("webgw") / "home"
    h.mkdir()
    p = cli(h, "ui")
    assert p.returncode == 0, p.stderr
    url = p.stdout.decode().strip()
    m = re.match(r"http://127\.0\.0\.1:(\d+)/#token=([A-Za-z0-9]{64})$", url)
    assert m, url
    port, token = int(m.group(1)), m.group(2)
    assert (h / "run" / "gateway.port").read_text().strip() == str(port)
    st = os.stat(h / "run" / "gateway.token")
    assert st.st_mode & 0o777 == 0o600
    yield {"home": h, "port": port, "token": token}
    p = cli(h, "list", "-a", "--json")
    if p.returncode == 0:
        ids = [v["id"] for v in json.loads(p.stdout)]
        if ids:
            cli(h, "delete", *ids)
    stop_daemon(h)
    # the gateway ends with its daemon (EOF on its parent socket)
    wait_for(lambda: not procs_mentioning(GATEWAY + " --port 0"), 10, "the gateway to exit")
    left = procs_mentioning(str(h))
    assert not left, f"processes left behind: {left}"


def raw(port, method, path, headers=None, body=b"", host=None):
    """One HTTP/1.1 request on its own connection: (status, headers dict, body bytes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    h = {"Host": host if host is not None else f"127.0.0.1:{port}", "Connection": "close"}
    h.update(headers or {})
    if body or method in ("POST", "PUT"):
        h["Content-Length"] = str(len(body))
    req = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
    s.sendall(req.encode() + body)
    data = b""
    while True:
        try:
            d = s.recv(65536)
        except ConnectionResetError:
            break
        if not d:
            break
        data += d
    s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hd = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hd[k.strip().lower()] = v.strip()
    return status, hd, rest


def auth(g):
    return {"Authorization": f"Bearer {g['token']}"}


def api(g, method, path, body=None, timeout=600):
    data = json.dumps(body).encode() if body is not None else None
    r = urllib.request.Request(f"http://127.0.0.1:{g['port']}/api{path}", data=data,
                               method=method, headers=dict(auth(g), **({"Content-Type": "application/json"} if data else {})))
    try:
        with urllib.request.urlopen(r, timeout=timeout) as f:
            return f.status, json.loads(f.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_health_and_security_headers(gw):
    st, hd, body = raw(gw["port"], "GET", "/health")
    assert st == 200 and json.loads(body)["ok"] is True
    assert hd["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in hd["content-security-policy"]
    assert hd["cache-control"] == "no-store"


def test_token_for_our_user_only(gw):
    st, _, body = raw(gw["port"], "GET", "/token")
    assert st == 200 and json.loads(body)["token"] == gw["token"]
    try:
        pwd.getpwnam("capsem-ci")
    except KeyError:
        pytest.skip("no capsem-ci user on this machine")
    if os.geteuid() != 0:
        pytest.skip("needs root to run a request as another user")
    # another local user connects to the same loopback port: refused by the socket's owner
    code = ("import socket,sys;s=socket.create_connection(('127.0.0.1',%d));"
            "s.sendall(b'GET /token HTTP/1.1\\r\\nHost: 127.0.0.1:%d\\r\\nConnection: close\\r\\n\\r\\n');"
            "d=b''\nwhile True:\n c=s.recv(65536)\n if not c: break\n d+=c\nsys.stdout.write(d.decode())") % (gw["port"], gw["port"])
    p = subprocess.run(["runuser", "-u", "capsem-ci", "--", "/usr/bin/python3", "-c", code],
                       capture_output=True, timeout=30)
    out = p.stdout.decode()
    assert out.startswith("HTTP/1.1 403"), (out, p.stderr)
    assert gw["token"] not in out


def test_auth_required(gw):
    st, _, body = raw(gw["port"], "GET", "/api/vms")
    assert st == 401 and json.loads(body)["code"] == "unauthorized"
    st, _, _ = raw(gw["port"], "GET", "/api/vms", {"Authorization": "Bearer " + "x" * 64})
    assert st == 401
    st, _, _ = raw(gw["port"], "GET", "/api/vms", {"Authorization": "Basic Zm9vOmJhcg=="})
    assert st == 401
    # ?token= is for WebSockets only
    st, _, _ = raw(gw["port"], "GET", "/api/vms?token=" + gw["token"])
    assert st == 401
    st, _, body = raw(gw["port"], "GET", "/api/vms", auth(gw))
    assert st == 200 and json.loads(body) == []


def test_origin_and_host(gw):
    p = gw["port"]
    for origin in (f"http://127.0.0.1:{p}", f"http://localhost:{p}"):
        st, _, _ = raw(p, "GET", "/api/vms", dict(auth(gw), Origin=origin))
        assert st == 200, origin
    for origin in ("http://evil.example", f"http://evil.example:{p}", "null",
                   f"http://127.0.0.1:{p + 1}", f"https://127.0.0.1:{p}",
                   f"http://127.0.0.1:{p}/x", f"http://u@127.0.0.1:{p}"):
        st, _, body = raw(p, "GET", "/api/vms", dict(auth(gw), Origin=origin))
        assert st == 403 and json.loads(body)["code"] == "forbidden_origin", origin
    # DNS rebinding: the right token cannot help a request that names another host
    for host in ("evil.example", f"evil.example:{p}", f"127.0.0.1:{p + 1}", "127.0.0.1.evil.example"):
        st, _, body = raw(p, "GET", "/api/vms", auth(gw), host=host)
        assert st == 403 and json.loads(body)["code"] == "forbidden_host", host
    # /token too
    st, _, _ = raw(p, "GET", "/token", {"Origin": "http://evil.example"})
    assert st == 403
    # a WebSocket upgrade from a foreign page
    ws = WS(p, "/events?token=" + gw["token"], {"Origin": "http://evil.example"})
    assert ws.status == 403
    ws.close()


def test_allow_list(gw):
    p = gw["port"]
    for method, path in (("POST", "/api/vms/x/exec"), ("GET", "/api/nope"),
                         ("GET", "/api/vms/x/snapshots"), ("POST", "/api/gateway"),
                         ("GET", "/vms"), ("GET", "/api/vms/../gateway"),
                         ("DELETE", "/api/vms"), ("GET", "/api/vms/x/y/z")):
        st, _, _ = raw(p, method, path, auth(gw))
        assert st == 404, (method, path)
    st, _, body = raw(p, "GET", "/api/version", auth(gw))
    assert st == 200 and json.loads(body)["api"] == 1


def test_body_cap(gw):
    st, _, body = raw(gw["port"], "POST", "/api/vms",
                      dict(auth(gw), **{"Content-Type": "application/json"}),
                      body=b"{" + b" " * (2 << 20) + b"}")
    assert st == 413


def test_bad_websocket_frames(gw):
    p, t = gw["port"], gw["token"]
    ws = WS(p, "/events")  # no token
    assert ws.status == 401
    ws.close()
    ws = WS(p, "/events?token=" + t, {"Sec-WebSocket-Key": "bad"})
    assert ws.status == 400
    ws.close()
    # an unmasked client frame: protocol error, close 1002
    ws = WS(p, "/events?token=" + t)
    assert ws.status == 101, ws.head
    ws.send_frame(1, b'{"x":1}', mask=False)
    op, pl = next_close(ws)
    assert op == 8 and int.from_bytes(pl[:2], "big") == 1002
    ws.close()
    # RSV bits without an extension, a bad opcode, a fragmented ping
    for kw in ({"rsv": 0x40}, {"rsv": 0x10}):
        ws = WS(p, "/events?token=" + t)
        ws.send_frame(1, b"hi", **kw)
        op, pl = next_close(ws)
        assert int.from_bytes(pl[:2], "big") == 1002, kw
        ws.close()
    ws = WS(p, "/events?token=" + t)
    ws.send_frame(3, b"hi")
    assert int.from_bytes(next_close(ws)[1][:2], "big") == 1002
    ws.close()
    ws = WS(p, "/events?token=" + t)
    ws.send_frame(9, b"hi", fin=False)
    assert int.from_bytes(next_close(ws)[1][:2], "big") == 1002
    ws.close()
    # a text message over 4 KiB: 1009
    ws = WS(p, "/events?token=" + t)
    ws.send_text("x" * 5000)
    assert int.from_bytes(next_close(ws)[1][:2], "big") == 1009
    ws.close()
    # a ping is answered, and the gateway still serves
    ws = WS(p, "/events?token=" + t)
    ws.send_frame(9, b"p1")
    while True:
        op, pl = ws.recv()
        if op == 10:
            assert pl == b"p1"
            break
    ws.close()
    st, _, _ = raw(p, "GET", "/health")
    assert st == 200


def next_close(ws):
    while True:
        op, pl = ws.recv()
        if op == 8:
            return op, pl


def test_rate_limit(gw):
    p = gw["port"]
    codes = [raw(p, "GET", "/api/vms", {"Authorization": "Bearer wrong"})[0] for _ in range(25)]
    assert 429 in codes and codes[0] == 401
    assert codes.index(429) <= 20
    # the owner, with the right token, is not locked out
    assert raw(p, "GET", "/api/vms", auth(gw))[0] == 200


def test_capsemd_down_502(tmp_path):
    """A gateway whose capsemd is not running answers 502 for proxied routes."""
    h = tmp_path / "home"
    h.mkdir()
    g = subprocess.Popen([GATEWAY, "--home", str(h), "--port", "0"], stderr=subprocess.PIPE)
    try:
        port_file = h / "run" / "gateway.port"
        wait_for(lambda: port_file.exists() and port_file.read_text().strip(), 10, "the gateway")
        port = int(port_file.read_text())
        token = (h / "run" / "gateway.token").read_text()
        st, _, body = raw(port, "GET", "/api/vms", {"Authorization": "Bearer " + token})
        assert st == 502 and json.loads(body)["code"] == "daemon_unavailable"
        # a terminal says so too, then closes
        ws = WS(port, "/terminal/web?token=" + token)
        assert ws.status == 101
        op, pl = ws.recv()
        assert op == 1 and json.loads(pl)["type"] == "error"
        ws.close()
        # a second gateway on the same home refuses to start
        p2 = subprocess.run([GATEWAY, "--home", str(h), "--port", "0"], capture_output=True, timeout=10)
        assert p2.returncode == 3
    finally:
        g.terminate()
        g.wait(10)
    assert not port_file.exists()


def read_until(ws, needle, timeout=60):
    """Terminal output until needle (bytes, or a compiled regex) appears in it."""
    got = b""
    end = time.time() + timeout
    found = (lambda g: needle.search(g)) if hasattr(needle, "search") else (lambda g: needle in g)
    while not found(got):
        assert time.time() < end, got[-500:]
        op, pl = ws.recv()
        if op == 2:
            got += pl
        elif op == 1:
            msg = json.loads(pl)
            assert msg.get("type") not in ("error", "exit"), msg
        elif op == 8:
            raise AssertionError(f"closed: {pl!r}; output so far {got[-500:]!r}")
    return got


def test_vm_terminal_status_stats(gw):
    st, vm = api(gw, "POST", "/vms", {"name": "webt", "memory": "256M"})
    assert st == 201, vm
    p, t = gw["port"], gw["token"]
    ws = WS(p, f"/terminal/webt?token={t}&rows=30&cols=100", timeout=120)
    assert ws.status == 101, ws.head
    ws.send_binary(b"echo h''i; echo PID=$$\r")
    out = read_until(ws, re.compile(rb"PID=\d+\r?\n"), timeout=120)
    pid = re.search(rb"PID=(\d+)", out).group(1)
    assert b"\nhi" in out.replace(b"\r", b"")
    # resize: the shell sees the new size
    ws.send_text(json.dumps({"cols": 132, "rows": 40}))
    ws.send_binary(b"stty size\r")
    read_until(ws, b"40 132")
    ws.close()
    # reattach: the same shell, with the last output replayed
    ws = WS(p, f"/terminal/webt?token={t}", timeout=120)
    assert ws.status == 101
    replay = read_until(ws, b"40 132", timeout=30)
    assert b"PID=" + pid in replay
    ws.send_binary(b"echo AGAIN=$$\r")
    read_until(ws, b"AGAIN=" + pid)
    # a second browser takes the terminal over: the first gets close 4000
    ws2 = WS(p, f"/terminal/webt?token={t}", timeout=120)
    assert ws2.status == 101
    op, pl = next_close(ws)
    assert int.from_bytes(pl[:2], "big") == 4000
    ws.close()
    ws2.close()
    # aggregated status, stats, activity
    st, s = api(gw, "GET", "/status")
    assert st == 200 and s["counts"]["running"] == 1 and s["vms"][0]["name"] == "webt"
    assert "usage" in s["vms"][0]
    st, stats = api(gw, "GET", "/vms/webt/stats")
    assert st == 200 and stats["counts"].get("exec", 0) >= 1, stats
    st, page = api(gw, "GET", "/vms/webt/activity?kind=exec&limit=5")
    assert st == 200 and page["total"] >= 1 and page["rows"][0]["kind"] == "exec"
    st, page = api(gw, "GET", "/vms/webt/activity?kind=net&decision=maybe")
    assert st == 400
    # keyset paging: two more commands, then one row a page, older by next_before, back by
    # prev_after
    for _ in range(2):
        assert cli(gw["home"], "exec", "webt", "--", "true").returncode == 0
    # the ledger's writer commits in batches: the last exec's row may land a moment later
    wait_for(lambda: api(gw, "GET", "/vms/webt/activity?kind=exec&limit=1")[1]["total"] >= 3,
             10, "the exec rows in the ledger")
    st, p1 = api(gw, "GET", "/vms/webt/activity?kind=exec&limit=1")
    assert st == 200 and p1["total"] >= 3 and p1["prev_after"] is None and len(p1["rows"]) == 1
    assert p1["next_before"] == p1["rows"][0]["id"]
    st, p2 = api(gw, "GET", f"/vms/webt/activity?kind=exec&limit=1&before={p1['next_before']}")
    assert st == 200 and p2["rows"][0]["id"] < p1["rows"][0]["id"]
    assert p2["prev_after"] == p2["rows"][0]["id"] and p2["next_before"] is not None
    st, back = api(gw, "GET", f"/vms/webt/activity?kind=exec&limit=1&after={p2['prev_after']}")
    assert st == 200 and back["rows"] == p1["rows"] and back["prev_after"] is None
    st, old = api(gw, "GET", "/vms/webt/activity?kind=exec&limit=1&after=0")
    assert st == 200 and old["next_before"] is None and old["rows"][0]["id"] < p2["rows"][0]["id"]
    for bad in ("before=0", "after=-1", "before=5&after=3", "before=5&offset=2", "before=x"):
        st, _ = api(gw, "GET", f"/vms/webt/activity?kind=exec&{bad}")
        assert st == 400, bad
    # /events pushes the status, then the state change of a stop
    ev = WS(p, f"/events?token={t}", timeout=120)
    assert ev.status == 101
    op, pl = ev.recv()
    first = json.loads(pl)
    assert first["type"] == "status"
    st, _ = api(gw, "POST", "/vms/webt/stop")
    assert st == 200
    end = time.time() + 120
    while True:
        assert time.time() < end
        op, pl = ev.recv()
        m = json.loads(pl)
        if m["type"] == "status" and m["payload"]["vms"][0]["state"] == "stopped":
            break
    ev.close()
    st, _ = api(gw, "DELETE", "/vms/webt")
    assert st == 200
