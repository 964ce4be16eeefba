#!/usr/bin/python3
"""bench_daemon.py - what capsemd adds over driving capsem-vm directly, measured in one run.

  create_to_exec_ms   POST /vms (ephemeral, 256M) -> 201 -> first `true` exec through the API
     baseline         capsem-vm started directly -> ready -> first `true` exec over its vsock
  exec_roundtrip_ms   one `true` exec through POST /vms/{ref}/exec (upgrade), connect to EXIT
     baseline         the same exec straight to <vmdir>/vsock (tests/e2e/capsem_client.py)
  delete_ms           DELETE /vms/{ref} of a running ephemeral VM -> answer (VM gone)
     baseline         SIGTERM to a direct capsem-vm -> process exit

A private CAPSEM_HOME and a daemon in the foreground are used; nothing is left behind.
Results: bench/results/daemon-<UTC time>.json. Options: --boots N (default 5), --execs M (200).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import capsem_client as cc  # noqa: E402

from bench_vm import summary  # noqa: E402

BUILD = os.environ.get("CAPSEM_BUILD", os.path.join(ROOT, "build"))
IMAGES = os.environ.get("CAPSEM_IMAGES_DIR", os.path.join(
    os.environ.get("CAPSEM_HOME") or os.path.expanduser("~/.capsem"), "images"))
IMAGE = os.path.join(IMAGES, "minimal")
CAPSEMD = os.path.join(BUILD, "src", "daemon", "capsemd")
CAPSEM_VM = os.path.join(BUILD, "src", "vm", "capsem-vm")


def http(sock, method, path, body=None):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock)
    data = json.dumps(body).encode() if body is not None else b""
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: capsemd\r\nConnection: close\r\n"
              f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    resp = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        resp += d
    s.close()
    head, _, payload = resp.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(payload) if payload else None


def api_exec_true(sock, ref):
    body = json.dumps({"argv": ["true"]}).encode()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock)
    s.sendall(f"POST /vms/{ref}/exec HTTP/1.1\r\nHost: capsemd\r\nConnection: Upgrade\r\n"
              f"Upgrade: capsem-exec/1\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body +
              cc.frame(cc.STDIN))
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise RuntimeError("closed before 101")
        buf += d
    head, _, buf = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    buf = bytearray(buf)
    while True:
        while len(buf) >= 6:
            ln, t = struct.unpack(">IH", buf[:6])
            if len(buf) < 6 + ln:
                break
            pl = bytes(buf[6:6 + ln])
            del buf[:6 + ln]
            if t == cc.EXIT:
                s.close()
                return struct.unpack(">Bi", pl[:5])[1]
        d = s.recv(65536)
        if not d:
            raise RuntimeError("closed before EXIT")
        buf += d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--boots", type=int, default=5)
    ap.add_argument("--execs", type=int, default=200)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="capsem-bench-d-")
    home = os.path.join(tmp, "home")
    os.makedirs(home)
    env = dict(os.environ, CAPSEM_HOME=home, CAPSEM_IMAGES_DIR=IMAGES)
    d = subprocess.Popen([CAPSEMD, "--foreground", "--log-level", "warn"], env=env,
                         stderr=subprocess.DEVNULL)
    sock = os.path.join(home, "run", "capsemd.sock")
    res = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "host": {"cpus": os.cpu_count()}}
    try:
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        create, create_base, delete, delete_base = [], [], [], []
        for i in range(a.boots):
            t0 = time.perf_counter()
            st, vm = http(sock, "POST", "/vms", {"memory": "256M"})
            assert st == 201, vm
            assert api_exec_true(sock, vm["id"]) == 0
            create.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            st, r = http(sock, "DELETE", f"/vms/{vm['id']}")
            assert st == 200, r
            delete.append((time.perf_counter() - t0) * 1000)

            t0 = time.perf_counter()
            p = subprocess.Popen([CAPSEM_VM, "--vmdir", os.path.join(tmp, f"v{i}"), "--rm",
                                  "--kernel", os.path.join(IMAGE, "vmlinux"), "--initrd",
                                  os.path.join(IMAGE, "initrd.img"), "--memory", "256M"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            ev = json.loads(p.stdout.readline())
            assert ev["event"] == "ready", ev
            assert cc.run(ev["vsock"], ["true"]).code == 0
            create_base.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            p.send_signal(signal.SIGTERM)
            p.wait(60)
            delete_base.append((time.perf_counter() - t0) * 1000)
            print(f"boot {i + 1}/{a.boots}: API {create[-1]:.0f} ms, direct {create_base[-1]:.0f} ms",
                  flush=True)
        res["create_to_exec_ms"] = summary(create)
        res["baseline_direct_boot_to_exec_ms"] = summary(create_base)
        res["delete_ms"] = summary(delete)
        res["baseline_direct_stop_ms"] = summary(delete_base)

        st, vm = http(sock, "POST", "/vms", {"memory": "256M"})
        assert st == 201, vm
        vsock = os.path.join(vm["vmdir"], "vsock")
        for _ in range(5):
            api_exec_true(sock, vm["id"])
            cc.run(vsock, ["true"])
        rtt, base = [], []
        for _ in range(a.execs):
            t0 = time.perf_counter()
            assert api_exec_true(sock, vm["id"]) == 0
            rtt.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            assert cc.run(vsock, ["true"]).code == 0
            base.append((time.perf_counter() - t0) * 1000)
        res["exec_roundtrip_ms"] = summary(rtt)
        res["baseline_direct_exec_roundtrip_ms"] = summary(base)
        http(sock, "DELETE", f"/vms/{vm['id']}")
    finally:
        d.terminate()
        d.wait(20)
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    if tmp.encode() in open(f"/proc/{pid}/cmdline", "rb").read():
                        os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
        shutil.rmtree(tmp, ignore_errors=True)

    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    out = os.path.join(ROOT, "bench", "results", "daemon-" + res["time"].replace(":", "") + ".json")
    with open(out, "w") as f:
        json.dump(res, f, indent=2)
    c, cb = res["create_to_exec_ms"], res["baseline_direct_boot_to_exec_ms"]
    e, eb = res["exec_roundtrip_ms"], res["baseline_direct_exec_roundtrip_ms"]
    dl, db = res["delete_ms"], res["baseline_direct_stop_ms"]
    print(f"create -> first exec  API p50 {c['p50']:8.1f} ms   direct capsem-vm p50 {cb['p50']:8.1f} ms")
    print(f"exec round trip       API p50 {e['p50']:6.2f} p95 {e['p95']:6.2f} ms   direct p50 "
          f"{eb['p50']:6.2f} p95 {eb['p95']:6.2f} ms")
    print(f"delete (stop)         API p50 {dl['p50']:8.1f} ms   direct SIGTERM p50 {db['p50']:8.1f} ms")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
