#!/usr/bin/python3
"""bench_workspace.py - the workspace's I/O inside the guest: the serial port's 9p (a suspendable
VM's workspace) vs virtio-fs vs QEMU's 9p vs the VM's ext4 disk.

One named Debian VM created --no-suspendable (capsemd, this tree's build, a private CAPSEM_HOME)
with its workspace on virtio-fs (/root/workspace, virtiofsd with cache=auto), a 9p share of
another host folder (/mnt/p9, QEMU's 9p, as `--mount` makes it) and its /root on the VM's ext4
disk (virtio-blk); then a default (suspendable) named VM whose workspace is capsem-vm's own 9p
server over a virtio-serial port ("serial"). In each of the four places the same guest-side
program (python3, in the image) measures:

  meta_10k_s       create + stat + delete of N small files (default 10,000), seconds
  randwrite_iops   4 KiB writes at random offsets of a 64 MiB file, each fdatasync'ed
  randread_iops    4 KiB reads at random offsets after the page cache was dropped
  seq_write_mibs   256 MiB written in 1 MiB blocks then fsync'ed
  seq_read_mibs    the same read back after the page cache was dropped
  git_status_s     `git status` in a repository of N committed files (one modified)

and, host side, the boot cost of virtiofsd: `capsem run -- true` with a --workspace vs
`capsem run --direct -- true` without one (capsem-vm start to exit, median of --boots runs).
Ratios are against the ext4 disk measured in the same run. Under TCG on this machine, not KVM.
Results: bench/results/workspace-<UTC time>.json. Options: --files N, --boots N.
"""
import argparse
import ast
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("CAPSEM_BUILD", os.path.join(ROOT, "build"))
IMAGES = os.environ.get("CAPSEM_IMAGES_DIR", os.path.join(
    os.environ.get("CAPSEM_HOME") or os.path.expanduser("~/.capsem"), "images"))
CAPSEM = os.path.join(BUILD, "src", "cli", "capsem")

GUEST = r"""
import os, random, subprocess, sys, time
d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d, exist_ok=True)
def drop():
    os.sync()
    open("/proc/sys/vm/drop_caches", "w").write("3\n")
r = {}
t = time.monotonic()
m = os.path.join(d, "meta")
os.mkdir(m)
for i in range(n):
    with open(os.path.join(m, "f%d" % i), "w") as f:
        f.write("x")
for i in range(n):
    os.stat(os.path.join(m, "f%d" % i))
for i in range(n):
    os.unlink(os.path.join(m, "f%d" % i))
os.rmdir(m)
r["meta_s"] = time.monotonic() - t
f = os.path.join(d, "rand")
with open(f, "wb") as fh:
    fh.truncate(64 << 20)
fd = os.open(f, os.O_RDWR)
blk = os.urandom(4096)
k = 300
t = time.monotonic()
for _ in range(k):
    os.pwrite(fd, blk, random.randrange(0, (64 << 20) // 4096) * 4096)
    os.fdatasync(fd)
r["randwrite_iops"] = k / (time.monotonic() - t)
os.close(fd)
drop()
fd = os.open(f, os.O_RDONLY)
k = 1000
t = time.monotonic()
for _ in range(k):
    os.pread(fd, 4096, random.randrange(0, (64 << 20) // 4096) * 4096)
r["randread_iops"] = k / (time.monotonic() - t)
os.close(fd)
os.unlink(f)
s = os.path.join(d, "seq")
mib = os.urandom(1 << 20)
t = time.monotonic()
with open(s, "wb") as fh:
    for _ in range(256):
        fh.write(mib)
    fh.flush()
    os.fsync(fh.fileno())
r["seq_write_mibs"] = 256 / (time.monotonic() - t)
drop()
t = time.monotonic()
with open(s, "rb") as fh:
    while fh.read(1 << 20):
        pass
r["seq_read_mibs"] = 256 / (time.monotonic() - t)
os.unlink(s)
g = os.path.join(d, "repo")
os.makedirs(g)
for i in range(n):
    sub = os.path.join(g, "d%d" % (i // 100))
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, "f%d" % i), "w") as fh:
        fh.write("%d\n" % i)
q = dict(cwd=g, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
try:
    subprocess.run(["git", "init", "-q"], **q)
    subprocess.run(["git", "add", "-A"], **q)
    # no background gc (it would race the rm -rf below)
    subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b", "-c", "gc.auto=0",
                    "-c", "maintenance.auto=false", "commit", "-qm", "x"], **q)
    with open(os.path.join(g, "d0", "f0"), "a") as fh:
        fh.write("changed\n")
    drop()
    t = time.monotonic()
    subprocess.run(["git", "status", "--porcelain"], **q)
    r["git_status_s"] = time.monotonic() - t
except subprocess.CalledProcessError as e:
    # (virtio-fs on a host that caps open files: virtiofsd runs out of fds)
    r["git_status_s"] = None
    r["git_error"] = e.stderr.decode(errors="replace").strip()[-200:]
for _ in range(10):  # (a straggling git process may still write into .git)
    if subprocess.run(["rm", "-rf", g]).returncode == 0:
        break
    time.sleep(1)
print(r)
"""


def cli(home, *args, timeout=3600):
    env = dict(os.environ, CAPSEM_HOME=home, CAPSEM_IMAGES_DIR=IMAGES,
               CAPSEM_WORKSPACE_TRANSPORT="virtiofs")
    p = subprocess.run([CAPSEM, *args], capture_output=True, env=env, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"capsem {' '.join(args)}: {p.stderr.decode()[-2000:]}")
    return p.stdout.decode()


def boot_s(home, args, n):
    out = []
    for _ in range(n):
        t = time.monotonic()
        cli(home, "run", "--image", "minimal", "--memory", "256M", *args, "--", "true")
        out.append(time.monotonic() - t)
    return statistics.median(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--boots", type=int, default=5)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="capsem-bench-ws-")
    home = os.path.join(tmp, "home")
    ws, wss, p9 = (os.path.join(tmp, x) for x in ("ws", "ws-serial", "p9"))
    for d in (home, ws, wss, p9):
        os.makedirs(d)
    res = {"files": a.files, "accel": "tcg", "places": {}}
    try:
        cli(home, "create", "-n", "bench", "--no-suspendable", "--image", "debian", "--memory",
            "2G", "--cpus", "2", "--workspace", ws, "--mount", f"{p9}:/mnt/p9")
        cli(home, "create", "-n", "bench-s", "--image", "debian", "--memory", "2G", "--cpus",
            "2", "--workspace", wss)
        for vm, name, d in (("bench", "disk", "/root/bench"),
                            ("bench", "virtiofs", "/root/workspace/bench"),
                            ("bench", "9p", "/mnt/p9/bench"),
                            ("bench-s", "serial", "/root/workspace/bench")):
            t = time.monotonic()
            out = cli(home, "exec", vm, "--", "python3", "-c", GUEST, d, str(a.files))
            r = ast.literal_eval(out.strip().splitlines()[-1])  # the dict GUEST printed
            r["wall_s"] = time.monotonic() - t
            res["places"][name] = r
            print(name, {k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()},
                  flush=True)
        base = res["places"]["disk"]

        def ratio(a, b):  # None when either side failed (e.g. git on a capped virtio-fs)
            return round(a / b, 3) if isinstance(a, float) and isinstance(b, float) else None
        keys = [k for k, v in base.items() if k != "wall_s" and isinstance(v, float)]
        res["ratios_vs_disk"] = {p: {k: ratio(v.get(k), base[k]) for k in keys}
                                 for p, v in res["places"].items() if p != "disk"}
        res["virtiofs_vs_9p"] = {k: ratio(res["places"]["virtiofs"].get(k),
                                          res["places"]["9p"].get(k)) for k in keys}
        res["serial_vs_9p"] = {k: ratio(res["places"]["serial"].get(k),
                                        res["places"]["9p"].get(k)) for k in keys}
        res["serial_vs_virtiofs"] = {k: ratio(res["places"]["serial"].get(k),
                                              res["places"]["virtiofs"].get(k)) for k in keys}
        res["errors"] = {p: v["git_error"] for p, v in res["places"].items() if "git_error" in v}
        cli(home, "delete", "bench")
        cli(home, "delete", "bench-s")
        res["boot_run_with_workspace_s"] = boot_s(home, ["--workspace", ws], a.boots)
        res["boot_run_direct_no_workspace_s"] = boot_s(home, ["--direct"], a.boots)
        res["boot_run_daemon_own_workspace_s"] = boot_s(home, [], a.boots)
    finally:
        try:  # the daemon this run started (its pid file names it)
            os.kill(int(open(os.path.join(home, "run", "capsemd.pid")).read()), signal.SIGTERM)
            time.sleep(1)
        except (OSError, ValueError):
            pass
        for pid in filter(str.isdigit, os.listdir("/proc")):  # VMs a failed run left behind
            try:
                if tmp.encode() in open(f"/proc/{pid}/cmdline", "rb").read():
                    os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({k: v for k, v in res.items() if k != "places"}, indent=1))
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    out = os.path.join(ROOT, "bench", "results",
                       time.strftime("workspace-%Y%m%dT%H%M%SZ.json", time.gmtime()))
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    print("results:", out)


if __name__ == "__main__":
    main()
