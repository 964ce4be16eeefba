#!/usr/bin/python3
"""bench_webgw.py - what the web gateway adds, measured in one run.

  api_call_ms         GET /api/version through capsem-gateway (loopback TCP, bearer token,
                      Host/Origin checks, a fresh Unix connection to capsemd per request)
     baseline         GET /version straight to capsemd's socket (keep-alive)
  status_ms           GET /api/status (every VM with its ledger usage) through the gateway
  keystroke_echo_ms   one character typed into a VM's shell until its echo comes back:
                      through the gateway's /terminal WebSocket (what the browser's terminal does)
     baseline         `capsem shell VM` in a pty (the CLI's relay over capsemd's exec upgrade)

The browser's own figure (xterm.js in chromium, the same WebSocket) is written by
tests/e2e/test_webui.py to build/ui-artifacts/latency-browser.json. A private CAPSEM_HOME;
nothing is left behind. Results: bench/results/webgw-<UTC time>.json. Options: --calls N (1000),
--keys M (300).
"""
import argparse
import http.client
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from wsclient import WS  # noqa: E402

from bench_vm import summary  # noqa: E402

BUILD = os.environ.get("CAPSEM_BUILD", os.path.join(ROOT, "build"))
CAPSEM = os.path.join(BUILD, "src", "cli", "capsem")
IMAGES = os.environ.get("CAPSEM_IMAGES_DIR", os.path.expanduser("~/.capsem/images"))


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("capsemd")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def timed(fn, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--keys", type=int, default=300)
    a = ap.parse_args()
    home = tempfile.mkdtemp(prefix="capsem-bench-webgw-")
    env = dict(os.environ, CAPSEM_HOME=home, CAPSEM_IMAGES_DIR=IMAGES, CAPSEM_GATEWAY_PORT="0",
               CAPSEM_IMAGE="minimal")
    res = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host_cpus": os.cpu_count()}
    try:
        url = subprocess.run([CAPSEM, "ui"], env=env, capture_output=True, check=True,
                             timeout=60).stdout.decode().strip()
        port, token = re.match(r"http://127\.0\.0\.1:(\d+)/#token=(\w+)", url).groups()
        port = int(port)
        hdr = {"Authorization": "Bearer " + token}

        gw = http.client.HTTPConnection("127.0.0.1", port)
        def via_gw(path="/api/version"):
            gw.request("GET", path, headers=hdr)
            r = gw.getresponse()
            assert r.status == 200, r.status
            r.read()
        direct = UnixHTTP(os.path.join(home, "run", "capsemd.sock"))
        def via_direct():
            direct.request("GET", "/version")
            r = direct.getresponse()
            assert r.status == 200
            r.read()
        via_gw(); via_direct()
        res["api_call_ms"] = summary(timed(via_gw, a.calls))
        res["api_call_ms_baseline_direct"] = summary(timed(via_direct, a.calls))

        subprocess.run([CAPSEM, "create", "-n", "bench", "--memory", "256M"], env=env,
                       capture_output=True, check=True, timeout=600)
        res["status_ms"] = summary(timed(lambda: via_gw("/api/status"), 200))

        # keystrokes through the gateway's terminal socket
        ws = WS(port, f"/terminal/bench?token={token}", timeout=60)
        assert ws.status == 101
        buf = b""
        ws.send_binary(b"echo READY$((1+1))\r")
        while b"READY2" not in buf:
            op, pl = ws.recv()
            buf += pl if op == 2 else b""
        lat = []
        for i in range(a.keys):
            c = b"abcdefghijklmnopqrstuvwxyz"[i % 26:i % 26 + 1]
            t = time.perf_counter()
            ws.send_binary(c)
            while True:
                op, pl = ws.recv()
                if op == 2 and c in pl:
                    break
            lat.append((time.perf_counter() - t) * 1000)
        ws.send_binary(b"\x15exit\r")
        ws.close()
        res["keystroke_echo_ms_gateway_ws"] = summary(lat)

        # the same through `capsem shell` in a pty
        pid, fd = pty.fork()
        if pid == 0:
            os.execve(CAPSEM, [CAPSEM, "shell", "bench"], env)
        out = b""
        os.write(fd, b"echo READY$((1+1))\r")
        end = time.time() + 60
        while b"READY2" not in out and time.time() < end:
            r, _, _ = select.select([fd], [], [], 1)
            if r:
                out += os.read(fd, 65536)
        time.sleep(0.2)
        while select.select([fd], [], [], 0.1)[0]:
            os.read(fd, 65536)
        lat = []
        for i in range(a.keys):
            c = b"abcdefghijklmnopqrstuvwxyz"[i % 26:i % 26 + 1]
            t = time.perf_counter()
            os.write(fd, c)
            got = b""
            while c not in got:
                select.select([fd], [], [], 5)
                got += os.read(fd, 65536)
            lat.append((time.perf_counter() - t) * 1000)
        os.write(fd, b"\x15exit\r")
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        res["keystroke_echo_ms_capsem_shell"] = summary(lat)
        browser = os.path.join(ROOT, "build", "ui-artifacts", "latency-browser.json")
        if os.path.exists(browser):
            res["keystroke_echo_ms_browser_last_ui_test"] = json.load(open(browser))
    finally:
        subprocess.run([CAPSEM, "delete", "bench"], env=env, capture_output=True, timeout=300)
        pidf = os.path.join(home, "run", "capsemd.pid")
        if os.path.exists(pidf):
            try:
                os.kill(int(open(pidf).read().split()[0]), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
        time.sleep(0.5)
        subprocess.run(["rm", "-rf", home])
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    out = os.path.join(ROOT, "bench", "results", "webgw-" + res["time"].replace(":", "") + ".json")
    with open(out, "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
