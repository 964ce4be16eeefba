#!/usr/bin/python3
"""bench_mcp.py - the per-VM MCP gateway's cost per tool call, measured host-side, beside the
same-run baseline.

The test stdio MCP server (tests/e2e/mcp_servers/stdio_server.py) answers tools/call `echo`.
Measured the same way (one client, sequential round trips: write the request line, read the
response line) against:
  direct   the server itself, spawned with pipes on its stdin/stdout
  gateway  the same server behind the gateway in gateway-front (tests/helpers/gateway-front.c),
           the client on the Unix socket the guest's relay would reach (<vmdir>/vsock_5003):
           JSON-RPC parse and checks, the tool policy, a ledger row per call, the server's pipe,
           i.e. everything but the relay and the vsock hop
  relay    (with --relay) the same through capsem-mcp-relay built for the host (--unix)
  vm       (with --vm) from inside a Debian VM (python3 in the guest; TCG here): the agent's
           path, capsem-mcp-relay -> vsock 5003 -> capsem-vm's gateway -> the server on the host,
           beside vm-direct, the same server file run inside the guest over pipes
Reported: round trips/s, latency p50/p99 (ms), and the gateway's added latency. The payload is
--size bytes of text (default 100). Results: bench/results/mcp-<time>.json with --save.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.abspath(os.environ.get("CAPSEM_BUILD", os.path.join(ROOT, "build")))
FRONT = os.path.join(BUILD, "tests", "helpers", "gateway-front")
AGENT_HOST = os.path.join(BUILD, "src", "guest", "capsem-agent-host")
SERVER = os.path.join(ROOT, "tests", "e2e", "mcp_servers", "stdio_server.py")


def request(i, name, text):
    return (json.dumps({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                        "params": {"name": name, "arguments": {"text": text}}}) + "\n").encode()


def run(wf, rf, name, n, text, warmup=50):
    """n sequential calls; returns the per-call latencies in seconds."""
    lat = []
    for i in range(warmup + n):
        t0 = time.perf_counter()
        wf.write(request(i, name, text))
        wf.flush()
        line = rf.readline()
        dt = time.perf_counter() - t0
        r = json.loads(line)
        assert r.get("id") == i and "result" in r, r
        if i >= warmup:
            lat.append(dt)
    return lat


def summary(lat):
    s = sorted(lat)
    return {"calls": len(s), "rps": len(s) / sum(s),
            "p50_ms": 1000 * statistics.median(s),
            "p99_ms": 1000 * s[min(len(s) - 1, int(len(s) * 0.99))]}


def handshake(wf, rf):
    wf.write(b'{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":'
             b'"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}\n'
             b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
    wf.flush()
    assert json.loads(rf.readline())["id"] == "init"


def bench_direct(n, text):
    p = subprocess.Popen([sys.executable, SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        handshake(p.stdin, p.stdout)
        return run(p.stdin, p.stdout, "echo", n, text)
    finally:
        p.stdin.close()
        p.wait(10)


def start_gateway(d, ledger):
    with open(os.path.join(d, "mcp.toml"), "w") as f:
        f.write(f'[servers.test]\ncommand = "{sys.executable}"\nargs = ["{SERVER}"]\n')
    os.makedirs(os.path.join(d, "home"), exist_ok=True)
    sock = os.path.join(d, "gw.sock")
    args = [FRONT, "--socket", sock, "--config", os.path.join(d, "mcp.toml"), "--home",
            os.path.join(d, "home")]
    if ledger:
        args += ["--ledger", os.path.join(d, "session.db")]
    g = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert g.stdout.readline().strip() == "ready"
    # wait for the server's tools
    end = time.monotonic() + 30
    while time.monotonic() < end:
        s = socket.socket(socket.AF_UNIX)
        s.connect(sock)
        f = s.makefile("rwb")
        f.write(b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}\n')
        f.flush()
        ok = "test__echo" in f.readline().decode()
        s.close()
        if ok:
            return g, sock
        time.sleep(0.1)
    raise RuntimeError("the gateway's test server did not come up")


def bench_gateway(sock, n, text):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    f = s.makefile("rwb")
    try:
        handshake(f, f)
        return run(f, f, "test__echo", n, text)
    finally:
        s.close()


def bench_relay(d, sock, n, text):
    link = os.path.join(d, "capsem-mcp-relay")
    if not os.path.exists(link):
        os.symlink(AGENT_HOST, link)
    p = subprocess.Popen([link, "--unix", sock], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        handshake(p.stdin, p.stdout)
        return run(p.stdin, p.stdout, "test__echo", n, text)
    finally:
        p.stdin.close()
        p.wait(10)


GUEST_CLIENT = r"""
import json, statistics, subprocess, sys, time
n, text, argv = int(sys.argv[1]), "x" * int(sys.argv[2]), sys.argv[3:]
name = "echo" if len(argv) > 1 else "test__echo"
p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
w, r = p.stdin, p.stdout
w.write(b'{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":'
        b'"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}\n'
        b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
w.flush()
assert json.loads(r.readline())["id"] == "init"
lat = []
for i in range(50 + n):
    t0 = time.perf_counter()
    w.write((json.dumps({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params":
             {"name": name, "arguments": {"text": text}}}) + "\n").encode())
    w.flush()
    m = json.loads(r.readline())
    assert m.get("id") == i and "result" in m, m
    if i >= 50:
        lat.append(time.perf_counter() - t0)
print(json.dumps(lat))
"""


def bench_vm(d, n, text_size):
    """(vm through the relay, vm-direct) latencies, measured by python3 inside a Debian VM."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
    import capsem_client as cc
    images = os.environ.get("CAPSEM_IMAGES_DIR") or os.path.join(
        os.environ.get("CAPSEM_HOME") or os.path.expanduser("~/.capsem"), "images")
    deb = os.path.join(images, "debian")
    m = json.load(open(os.path.join(deb, "manifest.json")))
    home = os.path.join(d, "vmhome")
    os.makedirs(home, exist_ok=True)
    with open(os.path.join(d, "vm-mcp.toml"), "w") as f:
        f.write(f'[servers.test]\ncommand = "{sys.executable}"\nargs = ["{SERVER}"]\n')
    vm = subprocess.Popen(
        [os.path.join(BUILD, "src", "vm", "capsem-vm"), "--vmdir", os.path.join(d, "vm"),
         "--kernel", os.path.join(deb, "vmlinux"), "--initrd", os.path.join(deb, "initrd.img"),
         "--rootfs", os.path.join(deb, m["rootfs"]["file"]), "--cpus", "2", "--memory", "1G",
         "--mount", f"{os.path.dirname(SERVER)}:/mnt/servers:ro",
         "--mcp-config", os.path.join(d, "vm-mcp.toml")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=dict(os.environ, CAPSEM_HOME=home))
    try:
        ev = json.loads(vm.stdout.readline() or b"{}")
        assert ev.get("event") == "ready", ev
        cc.run(ev["vsock"], ["sh", "-c", "cat > /tmp/client.py"], stdin=GUEST_CLIENT.encode())
        out = {}
        for key, argv in (("vm-direct", ["python3", "/mnt/servers/stdio_server.py"]),
                          ("vm", ["capsem-mcp-relay"])):
            end = time.monotonic() + 60
            while True:  # the gateway's server may still be starting
                r = cc.run(ev["vsock"], ["python3", "/tmp/client.py", str(n), str(text_size),
                                         *argv], io_timeout=600)
                if r.status == 0 or time.monotonic() > end:
                    break
                time.sleep(1)
            assert r.status == 0, r.stderr.decode(errors="replace")[-2000:]
            out[key] = json.loads(r.stdout.decode().strip().splitlines()[-1])
        return out["vm"], out["vm-direct"]
    finally:
        vm.terminate()
        vm.wait(60)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=2000, help="calls per configuration")
    ap.add_argument("--size", type=int, default=100, help="bytes of echoed text")
    ap.add_argument("--relay", action="store_true", help="also through capsem-mcp-relay")
    ap.add_argument("--vm", action="store_true",
                    help="also from inside a Debian VM (needs the debian image)")
    ap.add_argument("--no-ledger", action="store_true", help="gateway without a ledger")
    ap.add_argument("--save", action="store_true", help="write bench/results/mcp-<time>.json")
    a = ap.parse_args()
    text = "x" * a.size
    res = {}
    with tempfile.TemporaryDirectory(prefix="bench-mcp-") as d:
        res["direct"] = summary(bench_direct(a.n, text))
        g, sock = start_gateway(d, not a.no_ledger)
        try:
            res["gateway"] = summary(bench_gateway(sock, a.n, text))
            if a.relay:
                res["relay"] = summary(bench_relay(d, sock, a.n, text))
            if a.vm:
                vm_lat, vm_direct = bench_vm(d, min(a.n, 500), a.size)
                res["vm-direct"] = summary(vm_direct)
                res["vm"] = summary(vm_lat)
        finally:
            g.terminate()
            g.wait(20)
    print(f"{'':10} {'calls/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for k, v in res.items():
        print(f"{k:10} {v['rps']:10.0f} {v['p50_ms']:8.3f} {v['p99_ms']:8.3f}")
    added = res["gateway"]["p50_ms"] - res["direct"]["p50_ms"]
    print(f"gateway adds {added:.3f} ms at p50 "
          f"({res['gateway']['rps'] / res['direct']['rps']:.2f}x the direct rate)")
    if a.save:
        os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
        out = os.path.join(ROOT, "bench", "results",
                           time.strftime("mcp-%Y%m%dT%H%M%S.json", time.gmtime()))
        with open(out, "w") as f:
            json.dump({"n": a.n, "size": a.size, "results": res}, f, indent=2)
        print(out)


if __name__ == "__main__":
    main()
