"""capsem-mcp end to end: the official MCP TypeScript SDK as the client (tests/e2e/mcpsdk.py,
tests/e2e/mcp/client.mjs) and raw bytes written to capsem-mcp's stdin, against a real capsemd and
real microVMs (the minimal image).

One private CAPSEM_HOME for the module; capsemd is started on demand by capsem-mcp itself. One
named VM serves every VM test (create, files, exec, logs, events, stop/start, cancellation, a
daemon killed mid-call, delete), plus one capsem_run (its own ephemeral VM). At teardown every VM
is deleted, the daemon stopped, and no process may mention the home directory."""
import base64
import json
import os
import select
import signal
import subprocess
import time

import pytest

from conftest import BUILD, CAPSEM, IMAGES, need_image, procs_mentioning, wait_for
from mcpsdk import CLIENT, run_client

# CAPSEM_MCP_BIN: another build of capsem-mcp (e.g. a sanitizer build) against this build's daemon
CAPSEM_MCP = os.environ.get("CAPSEM_MCP_BIN") or os.path.join(BUILD, "src", "mcp", "capsem-mcp")
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")
VM = "mcp-web"
TOOLS = {"capsem_create", "capsem_list", "capsem_info", "capsem_exec", "capsem_run",
         "capsem_read_file", "capsem_write_file", "capsem_stop", "capsem_start",
         "capsem_delete", "capsem_logs", "capsem_events", "capsem_snapshots",
         "capsem_fork", "capsem_persist", "capsem_purge", "capsem_suspend", "capsem_resume"}


def env_for(home):
    e = dict(os.environ, CAPSEM_HOME=str(home), CAPSEM_IMAGES_DIR=IMAGES)
    e.pop("CAPSEM_NO_DAEMON", None)
    return e


def daemon_pid(home):
    try:
        return int((home / "run" / "capsemd.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop_daemon(home):
    pid = daemon_pid(home)
    if not pid:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or
                 open(f"/proc/{pid}/stat").read().split()[2] == "Z", 30, "capsemd to exit")
    except AssertionError:
        os.kill(pid, signal.SIGKILL)


def running_exec(home, text, exclude=()):
    """The ledger row of an exec in VM whose argv mentions text and whose end has not been seen
    (capsem-vm writes it when the EXEC frame passes), other than those in exclude (exec ids)."""
    p = subprocess.run([CAPSEM, "events", VM, "--kind", "exec", "--json"], capture_output=True,
                       env=env_for(home), timeout=60)
    if p.returncode != 0:
        return None
    for e in json.loads(p.stdout):
        if text in json.dumps(e["argv"]) and e["ts_end"] is None and e["error"] is None \
                and e["exec_id"] not in exclude:
            return e
    return None


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    need_image()
    assert os.access(CAPSEM_MCP, os.X_OK), f"{CAPSEM_MCP} is not built"
    h = tmp_path_factory.mktemp("mcp") / "home"
    h.mkdir()
    yield h
    env = env_for(h)
    if daemon_pid(h):
        p = subprocess.run([CAPSEM, "list", "-a", "--json"], capture_output=True, env=env,
                           timeout=60)
        if p.returncode == 0:
            ids = [v["id"] for v in json.loads(p.stdout)]
            if ids:
                subprocess.run([CAPSEM, "delete", *ids], capture_output=True, env=env,
                               timeout=120)
    stop_daemon(h)
    left = procs_mentioning(str(h))
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left behind: {left}"


def sdk(home, steps, timeout=300):
    """Run the SDK client over capsem-mcp with these steps; returns the per-step entries
    (entry 0 describes the connection)."""
    f = home.parent / f"steps-{time.monotonic_ns()}.json"
    f.write_text(json.dumps(steps))
    p = run_client(CLIENT, [str(f), "--", CAPSEM_MCP], env=env_for(home), timeout=timeout)
    assert p.returncode == 0, (p.returncode, p.stdout[-3000:], p.stderr[-3000:])
    assert not any(m in p.stderr for m in SANITIZER_MARKS), p.stderr[-5000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out[0]["ok"], out[0]
    return out


def call(home, tool, arguments=None):
    """One tools/call through the SDK: the CallToolResult (or the JSON-RPC error entry)."""
    e = sdk(home, [{"op": "call", "name": tool, "arguments": arguments or {}}])[1]
    return e["result"] if e["ok"] else e


def text(res):
    return "".join(c["text"] for c in res["content"] if c["type"] == "text")


def ok(res):
    assert "isError" not in res or res["isError"] is False, res
    return res.get("structuredContent")


class Raw:
    """capsem-mcp driven by hand: bytes in, JSON lines out."""

    def __init__(self, home):
        self.p = subprocess.Popen([CAPSEM_MCP], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=env_for(home))
        self.buf = b""

    def send(self, data):
        if isinstance(data, (dict, list)):
            data = json.dumps(data).encode() + b"\n"
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def recv(self, timeout=10):
        """The next message, or None after timeout seconds of silence."""
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.p.stdout], [], [], left)
            if not r:
                return None
            chunk = os.read(self.p.stdout.fileno(), 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def close(self, timeout=30):
        """EOF on stdin; returns the exit status. self.rest: what was still unread."""
        self.p.stdin.close()
        rc = self.p.wait(timeout)
        self.rest = self.buf + self.p.stdout.read()
        err = self.p.stderr.read().decode(errors="replace")
        self.p.stdout.close()
        self.p.stderr.close()
        assert not any(m in err for m in SANITIZER_MARKS), err[-5000:]
        return rc


@pytest.fixture
def raw(home):
    r = Raw(home)
    yield r
    if r.p.poll() is None:
        r.p.kill()
        r.p.wait()


# ---- protocol (no VM) ----

def test_initialize_and_tools_list(home):
    assert daemon_pid(home) is None  # nothing started yet: capsem-mcp starts it on demand
    out = sdk(home, [{"op": "list_tools"}, {"op": "ping"}])
    info = out[0]["result"]
    assert info["server"]["name"] == "capsem" and info["server"]["version"]
    assert "tools" in info["capabilities"]
    assert "capsem_run" in info["instructions"]
    tools = out[1]["result"]["tools"]
    assert {t["name"] for t in tools} == TOOLS
    for t in tools:
        s = t["inputSchema"]
        assert s["type"] == "object" and s["additionalProperties"] is False, t["name"]
        assert t["description"], t["name"]
        for r in s.get("required", []):
            assert r in s["properties"], (t["name"], r)
    exec_schema = next(t for t in tools if t["name"] == "capsem_exec")["inputSchema"]
    assert exec_schema["required"] == ["vm", "command"]
    assert exec_schema["properties"]["timeout"]["type"] == "number"
    assert out[2]["ok"] and out[2]["result"] == {}


def test_errors(home):
    out = sdk(home, [
        {"op": "call", "name": "capsem_nope", "arguments": {}},
        {"op": "call", "name": "capsem_info", "arguments": {"vm": 12}},
        {"op": "call", "name": "capsem_exec", "arguments": {"vm": "x"}},
        {"op": "call", "name": "capsem_exec", "arguments": {"vm": "x", "command": "true",
                                                            "extra": 1}},
        {"op": "call", "name": "capsem_exec", "arguments": {"vm": "x", "command": "true",
                                                            "timeout": -1}},
        {"op": "call", "name": "capsem_create", "arguments": {"name": "Not Valid"}},
        {"op": "call", "name": "capsem_info", "arguments": {"vm": "ghost"}},
        {"op": "call", "name": "capsem_exec", "arguments": {"vm": "ghost", "command": "true"}},
        {"op": "request", "method": "resources/list"},
    ])
    e = out[1:]
    assert not e[0]["ok"] and e[0]["error"]["code"] == -32602
    assert "Unknown tool: capsem_nope" in e[0]["error"]["message"]
    for i, frag in ((1, "arguments.vm: expected a string"),
                    (2, "missing required property 'command'"),
                    (3, "unknown property 'extra'"),
                    (4, "arguments.timeout: must be >= 0.1"),
                    (5, "arguments.name: must match")):
        assert not e[i]["ok"] and e[i]["error"]["code"] == -32602, e[i]
        assert frag in e[i]["error"]["message"], e[i]
    # daemon failures are tool results with isError and the daemon's message
    for i in (6, 7):
        assert e[i]["ok"] and e[i]["result"]["isError"] is True, e[i]
        assert text(e[i]["result"]) == "no VM 'ghost'"
    assert not e[8]["ok"] and e[8]["error"]["code"] == -32601
    assert daemon_pid(home)  # started on demand


def test_raw_protocol(raw):
    raw.send({"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2024-11-05", "capabilities": {},
                         "clientInfo": {"name": "raw", "version": "0"}}})
    r = raw.recv()
    assert r["id"] == 1 and r["result"]["protocolVersion"] == "2025-06-18"
    assert r["result"]["serverInfo"]["name"] == "capsem"
    raw.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    raw.send(b'{"jsonrpc":"2.0","id":2,"method":\n')  # malformed JSON
    r = raw.recv()
    assert r["id"] is None and r["error"]["code"] == -32700
    raw.send(b"\xff\xfe not json\n")
    assert raw.recv()["error"]["code"] == -32700

    # an oversized line (5 MiB > 4 MiB) is skipped to its newline and refused; the next works
    raw.send(b'{"jsonrpc":"2.0","id":3,"method":"ping","params":{"x":"' + b"a" * (5 << 20) +
             b'"}}\n')
    r = raw.recv(30)
    assert r["id"] is None and r["error"]["code"] == -32600
    assert "too large" in r["error"]["message"]
    raw.send({"jsonrpc": "2.0", "id": 4, "method": "ping"})
    assert raw.recv() == {"jsonrpc": "2.0", "id": 4, "result": {}}

    raw.send({"jsonrpc": "2.0", "id": 5, "method": "no/such/method"})
    r = raw.recv()
    assert r["id"] == 5 and r["error"]["code"] == -32601

    raw.send([{"jsonrpc": "2.0", "id": 6, "method": "ping"}])  # batches are gone (2025-06-18)
    r = raw.recv()
    assert r["id"] is None and r["error"]["code"] == -32600 and "batch" in r["error"]["message"]

    raw.send({"jsonrpc": "1.0", "id": 7, "method": "ping"})
    r = raw.recv()
    assert r["id"] == 7 and r["error"]["code"] == -32600
    raw.send({"jsonrpc": "2.0", "id": None, "method": "ping"})
    assert raw.recv()["error"]["code"] == -32600

    raw.send({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": 3}})
    assert raw.recv()["error"]["code"] == -32602
    raw.send({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
              "params": {"name": "capsem_info", "arguments": [1]}})
    assert raw.recv()["error"]["code"] == -32602
    raw.send({"jsonrpc": "2.0", "id": 10, "method": "initialize", "params": {}})
    assert raw.recv()["error"]["code"] == -32602

    # notifications and responses get no answer; blank lines and CRLF are fine
    raw.send({"jsonrpc": "2.0", "method": "notifications/whatever", "params": {}})
    raw.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
              "params": {"requestId": 999}})
    raw.send({"jsonrpc": "2.0", "id": 77, "result": {}})
    raw.send(b"\n\r\n")
    raw.send(b'{"jsonrpc":"2.0","id":"s-11","method":"ping"}\r\n')
    assert raw.recv() == {"jsonrpc": "2.0", "id": "s-11", "result": {}}
    # deep nesting is refused before parsing
    raw.send(b'{"jsonrpc":"2.0","id":12,"method":"ping","params":{"a":' + b"[" * 100 +
             b"]" * 100 + b"}}\n")
    assert raw.recv()["error"]["code"] == -32600
    # a final message without a newline is still handled at EOF
    raw.send(b'{"jsonrpc":"2.0","id":13,"method":"ping"}')
    raw.p.stdin.close()
    assert raw.recv() == {"jsonrpc": "2.0", "id": 13, "result": {}}
    assert raw.p.wait(10) == 0


# ---- one VM for everything below ----

@pytest.fixture(scope="module")
def vm(home):
    res = call(home, "capsem_create", {"name": VM, "cpus": 1, "memory": "512M",
                                     "env": {"FROM_CREATE": "yes"}})
    v = ok(res)
    assert v["name"] == VM and v["state"] == "running", v
    yield v
    res = call(home, "capsem_delete", {"vm": VM})
    assert ok(res)["deleted"] == v["id"], res


def test_info_and_list(home, vm):
    out = sdk(home, [{"op": "call", "name": "capsem_info", "arguments": {"vm": VM}},
                     {"op": "call", "name": "capsem_info", "arguments": {"vm": vm["id"][:6]}},
                     {"op": "call", "name": "capsem_list", "arguments": {}}])
    assert ok(out[1]["result"])["id"] == vm["id"]
    assert ok(out[2]["result"])["name"] == VM
    vms = ok(out[3]["result"])["vms"]
    assert [v["id"] for v in vms if v["name"] == VM] == [vm["id"]]
    assert json.loads(text(out[3]["result"])) == {"vms": vms}


def test_exec(home, vm):
    out = sdk(home, [
        {"op": "call", "name": "capsem_exec",
         "arguments": {"vm": VM, "command": "echo out; echo err >&2; exit 3"}},
        {"op": "call", "name": "capsem_exec",
         "arguments": {"vm": VM, "command": "cat; echo \"$FROM_CREATE $MINE\"; pwd",
                       "stdin": "from stdin\n", "env": {"MINE": "mine"}, "cwd": "/tmp"}},
        {"op": "call", "name": "capsem_exec",
         "arguments": {"vm": VM, "command": "sleep 10", "timeout": 1}},
        {"op": "call", "name": "capsem_exec",
         "arguments": {"vm": VM, "command": "head -c 1500000 /dev/zero | tr '\\0' a; "
                                            "printf '\\377\\376bin' >&2"}},
    ])
    r = ok(out[1]["result"])
    assert (r["exit_code"], r["stdout"], r["stderr"], r["timed_out"]) == (3, "out\n", "err\n",
                                                                          False)
    t = text(out[1]["result"])
    assert t.startswith("exit_code: 3\n") and "stdout:\nout\n" in t and "stderr:\nerr\n" in t
    r = ok(out[2]["result"])
    assert r["exit_code"] == 0 and r["stdout"] == "from stdin\nyes mine\n/tmp\n", r
    r = ok(out[3]["result"])
    assert r["timed_out"] is True and r["exit_code"] == 124, r
    assert out[3]["elapsed_ms"] < 20000
    r = ok(out[4]["result"])
    assert r["stdout_truncated"] is True and r["stdout_bytes"] == 1500000
    assert r["stdout"] == "a" * (1 << 20)
    assert r["stderr"] == "\ufffd\ufffdbin"  # invalid UTF-8 becomes U+FFFD
    assert "truncated: first 1048576 of 1500000 bytes" in text(out[4]["result"])


def test_files(home, vm):
    blob = bytes(range(256)) * 3
    out = sdk(home, [
        {"op": "call", "name": "capsem_write_file",
         "arguments": {"vm": VM, "path": "/root/notes.txt", "content": "héllo\nwörld\n"}},
        {"op": "call", "name": "capsem_write_file",
         "arguments": {"vm": VM, "path": "/root/blob.bin", "encoding": "base64",
                       "content": base64.b64encode(blob).decode(), "mode": "0600"}},
        {"op": "call", "name": "capsem_read_file",
         "arguments": {"vm": VM, "path": "/root/notes.txt"}},
        {"op": "call", "name": "capsem_read_file",
         "arguments": {"vm": VM, "path": "/root/blob.bin"}},
        {"op": "call", "name": "capsem_exec",
         "arguments": {"vm": VM, "command": "stat -c %a /root/blob.bin; wc -c < /root/blob.bin"}},
        {"op": "call", "name": "capsem_read_file",
         "arguments": {"vm": VM, "path": "/root/missing"}},
        {"op": "call", "name": "capsem_write_file",
         "arguments": {"vm": VM, "path": "/root/x", "content": "!!", "encoding": "base64"}},
        {"op": "call", "name": "capsem_read_file",
         "arguments": {"vm": VM, "path": "relative"}},
    ])
    assert ok(out[1]["result"])["bytes"] == len("héllo\nwörld\n".encode())
    assert ok(out[2]["result"])["bytes"] == len(blob)
    r = ok(out[3]["result"])
    assert (r["encoding"], r["content"]) == ("utf-8", "héllo\nwörld\n")
    r = ok(out[4]["result"])
    assert r["encoding"] == "base64" and base64.b64decode(r["content"]) == blob
    assert r["size"] == len(blob)
    assert ok(out[5]["result"])["stdout"].split() == ["600", str(len(blob))]
    assert out[6]["result"]["isError"] is True and text(out[6]["result"])
    assert out[7]["result"]["isError"] is True
    assert "not valid base64" in text(out[7]["result"])
    assert out[8]["error"]["code"] == -32602


def test_logs_and_events(home, vm):
    out = sdk(home, [
        {"op": "call", "name": "capsem_exec", "arguments": {"vm": VM, "command": "echo marker"}},
        {"op": "call", "name": "capsem_logs", "arguments": {"vm": VM, "tail": 50}},
        {"op": "call", "name": "capsem_logs", "arguments": {"vm": VM, "source": "agent"}},
        {"op": "call", "name": "capsem_logs", "arguments": {"vm": VM, "source": "nope"}},
    ])
    assert text(out[2]["result"]).strip()
    assert len(text(out[2]["result"]).splitlines()) <= 50
    assert "isError" not in out[3]["result"]
    assert out[4]["error"]["code"] == -32602

    # the ledger is written by a batching thread: poll until the exec shows up
    def marker_events():
        ev = ok(call(home, "capsem_events", {"vm": VM, "kind": ["exec"], "limit": 1000}))
        ev = ev["events"]
        assert ev and all(e["kind"] == "exec" for e in ev)
        # an exec row is written at the start and completed (moved to a new id) at the end
        return ev if any(e["argv"] == ["echo marker"] and e["ts_end"] is not None
                         for e in ev) else None

    events = wait_for(marker_events, 20, "the exec in the ledger")
    # the exec tool's commands say mcp; the file tools' transfers (the daemon's file routes,
    # which run in the guest too) say file
    assert all(e["via"] in ("mcp", "file") for e in events)
    assert any(e["via"] == "mcp" and e["argv"] == ["echo marker"] for e in events)
    since = events[-2]["id"]
    later = ok(call(home, "capsem_events", {"vm": VM, "since": since}))["events"]
    assert [e["id"] for e in later][:1] == [events[-1]["id"]]


def test_snapshots_tool(home, vm):
    """capsem_snapshots: the host agent snapshots the VM's workspace, sees the guest's change,
    reverts it; bad arguments are refused by the schema."""
    def sh(cmd):
        return ok(call(home, "capsem_exec", {"vm": VM, "command": cmd}))

    sh("printf v1 > /root/workspace/notes.txt")
    made = ok(call(home, "capsem_snapshots", {"vm": VM, "action": "create", "name": "mcp-1"}))
    assert made["created"] is True, made
    sh("printf v2 > /root/workspace/notes.txt")
    ch = ok(call(home, "capsem_snapshots", {"vm": VM, "action": "changes", "snapshot": "mcp-1"}))
    assert [c["path"] for c in ch["modified"]] == ["notes.txt"], ch
    ok(call(home, "capsem_snapshots", {"vm": VM, "action": "revert", "paths": ["notes.txt"],
                                       "snapshot": "mcp-1"}))
    wait_for(lambda: sh("cat /root/workspace/notes.txt")["stdout"] == "v1", 10,
             "the reverted file in the guest")
    hist = ok(call(home, "capsem_snapshots", {"vm": VM, "action": "history",
                                              "path": "notes.txt"}))
    assert hist["versions"][0]["snapshot"] == "mcp-1", hist
    names = [s["name"] for s in ok(call(home, "capsem_snapshots",
                                        {"vm": VM, "action": "list"}))["snapshots"]]
    assert "mcp-1" in names
    ok(call(home, "capsem_snapshots", {"vm": VM, "action": "delete", "name": "mcp-1"}))
    ok(call(home, "capsem_snapshots", {"vm": VM, "action": "compact"}))
    res = call(home, "capsem_snapshots", {"vm": VM, "action": "create", "name": "../x"})
    assert "error" in res or res.get("isError"), res


def test_fork_persist_purge(home, vm):
    """The rest of the lifecycle: fork the VM into an image and boot from it, name an ephemeral
    VM, purge."""
    subprocess.run([CAPSEM, "image", "rm", "mcp-img"], env=env_for(home), capture_output=True,
                   timeout=60)  # a leftover of an interrupted run
    ok(call(home, "capsem_exec", {"vm": VM, "command": "echo forked > /root/mark"}))
    img = ok(call(home, "capsem_fork", {"vm": VM, "image": "mcp-img",
                                        "description": "from the MCP test"}))
    assert img["image"] == "mcp-img" and img["base"] == "minimal", img
    res = call(home, "capsem_fork", {"vm": VM, "image": "mcp-img"})
    assert res.get("isError") and "exists" in text(res), res
    res = call(home, "capsem_fork", {"vm": VM, "image": "Bad"})
    assert "error" in res or res.get("isError"), res
    eph = ok(call(home, "capsem_create", {"image": "mcp-img", "memory": "256M"}))
    out = ok(call(home, "capsem_exec", {"vm": eph["id"], "command": "cat /root/mark"}))
    assert out["stdout"] == "forked\n", out
    named = ok(call(home, "capsem_persist", {"vm": eph["id"], "name": "kept"}))
    assert named["name"] == "kept" and named["persistent"] is True, named
    ok(call(home, "capsem_stop", {"vm": "kept"}))
    gone = ok(call(home, "capsem_purge", {}))
    assert named["id"] in gone["deleted"], gone
    p = subprocess.run([CAPSEM, "image", "rm", "mcp-img"], env=env_for(home),
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p


def test_cancel_exec_sdk(home, vm):
    """The SDK aborts a long exec: notifications/cancelled; the server keeps answering and the
    command is killed in the guest."""
    out = sdk(home, [
        {"op": "cancel_call", "name": "capsem_exec",
         "arguments": {"vm": VM, "command": "sleep 30; echo never"}, "after_ms": 1500},
        {"op": "ping"},
        {"op": "sleep", "ms": 500},
        {"op": "call", "name": "capsem_exec",
         "arguments": {"vm": VM, "command": "ps | grep -c '[s]leep 30' || true"}},
    ])
    c = out[1]
    assert not c["ok"] and c["aborted"] is True, c
    assert c["elapsed_ms"] < 10000
    assert out[2]["ok"]
    assert ok(out[4]["result"])["stdout"].strip() == "0"


def test_cancel_exec_raw(home, vm, raw):
    """Cancelled: no result is ever sent for it; ping is answered while it runs; EOF ends
    capsem-mcp promptly."""
    raw.send({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
              "params": {"name": "capsem_exec",
                         "arguments": {"vm": VM, "command": "sleep 30", "timeout": 60}}})
    raw.send({"jsonrpc": "2.0", "id": 8, "method": "ping"})
    assert raw.recv() == {"jsonrpc": "2.0", "id": 8, "result": {}}
    first = wait_for(lambda: running_exec(home, "sleep 30"), 60, "the exec to run in the guest")
    raw.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
              "params": {"requestId": 7, "reason": "test"}})
    raw.send({"jsonrpc": "2.0", "id": 9, "method": "ping"})
    assert raw.recv() == {"jsonrpc": "2.0", "id": 9, "result": {}}
    assert raw.recv(3) is None  # nothing for id 7
    # an exec in flight at EOF is cancelled too, and capsem-mcp exits without answering it
    raw.send({"jsonrpc": "2.0", "id": 10, "method": "tools/call",
              "params": {"name": "capsem_exec", "arguments": {"vm": VM, "command": "sleep 30"}}})
    wait_for(lambda: running_exec(home, "sleep 30", (first["exec_id"],)), 60,
             "the second exec to run in the guest")
    t0 = time.monotonic()
    assert raw.close() == 0
    assert time.monotonic() - t0 < 10
    assert raw.rest == b""


def test_daemon_dies_mid_call(home, vm):
    """capsemd killed during an exec: the call fails with isError, capsem-mcp stays up, and the
    next call starts a new daemon, which re-adopts the running VM."""
    r = Raw(home)
    try:
        r.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "capsem_exec",
                           "arguments": {"vm": VM, "command": "sleep 20"}}})
        wait_for(lambda: running_exec(home, "sleep 20"), 60, "the exec to run in the guest")
        os.kill(daemon_pid(home), signal.SIGKILL)
        m = r.recv(30)
        assert m["id"] == 1 and m["result"]["isError"] is True, m
        assert "lost" in text(m["result"]) or "closed" in text(m["result"]), m
        r.send({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": {"name": "capsem_info", "arguments": {"vm": VM}}})
        m = r.recv(60)
        assert m["id"] == 2 and m["result"]["structuredContent"]["state"] == "running", m
        assert r.close() == 0
    finally:
        if r.p.poll() is None:
            r.p.kill()
            r.p.wait()


def test_stop_start_keeps_root(home, vm):
    out = sdk(home, [
        {"op": "call", "name": "capsem_stop", "arguments": {"vm": VM}},
        {"op": "call", "name": "capsem_info", "arguments": {"vm": VM}},
        {"op": "call", "name": "capsem_exec", "arguments": {"vm": VM, "command": "true"}},
        {"op": "call", "name": "capsem_start", "arguments": {"vm": VM}},
        {"op": "call", "name": "capsem_read_file",
         "arguments": {"vm": VM, "path": "/root/notes.txt"}},
    ])
    assert ok(out[1]["result"])["state"] == "stopped"
    assert ok(out[2]["result"])["state"] == "stopped"
    assert out[3]["result"]["isError"] is True and text(out[3]["result"])
    assert ok(out[4]["result"])["state"] == "running"
    assert ok(out[5]["result"])["content"] == "héllo\nwörld\n"


# ---- an ephemeral VM: create, exec, delete ----

def test_run(home):
    res = call(home, "capsem_run", {"command": "echo hi from run; uname -s; exit 5",
                                   "timeout": 30})
    r = ok(res)
    assert r["exit_code"] == 5 and r["stdout"] == "hi from run\nLinux\n", r
    vid = r["vm"]
    listed = ok(call(home, "capsem_list"))["vms"]
    assert vid not in [v["id"] for v in listed]
