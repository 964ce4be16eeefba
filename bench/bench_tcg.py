#!/usr/bin/python3
"""bench_tcg.py - QEMU's host memory under TCG against the translation-cache size.

Under TCG, QEMU translates guest code into a translation cache that, unless told otherwise,
may grow to 1 GiB: a busy guest's QEMU then holds far more host memory than the guest's RAM.
capsem-vm passes `-accel tcg,tb-size=N` (--tcg-tb-mib). For each size this benchmark boots the
same VM, runs the same mixed workload of execs (shell tools, python3 imports, git) and records:

  boot_to_first_exec_ms   capsem-vm start -> first `true` exec returned
  exec_ms                 each workload exec, p50/p95
  qemu_rss_mib            QEMU's VmRSS after every --step execs (the curve), and at the end
  (--workload node: the same node/V8 JIT program each time, the translation cache's worst case)

The baseline is QEMU's own default (tb-size unset, printed as 0), measured in the same run.
Results: bench/results/tcg-<UTC time>.json. Options: --execs N (default 400), --sizes 0,64,128,256,
--image debian|minimal (default debian when installed).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import capsem_client as cc  # noqa: E402

BUILD = os.environ.get("CAPSEM_BUILD", os.path.join(ROOT, "build"))
IMAGES = os.environ.get("CAPSEM_IMAGES_DIR", os.path.join(
    os.environ.get("CAPSEM_HOME") or os.path.expanduser("~/.capsem"), "images"))
CAPSEM_VM = os.path.join(BUILD, "src", "vm", "capsem-vm")

WORKLOAD = [
    ["true"],
    ["sh", "-c", "ls -la /usr/lib /usr/bin > /dev/null; sort /etc/services | uniq | wc -l"],
    ["sh", "-c", "awk 'BEGIN { for (i = 0; i < 20000; i++) s += i * i; print s }'"],
    ["python3", "-c", "import json, re, hashlib; print(hashlib.sha256(b'x').hexdigest())"],
    ["git", "--version"],
    ["sh", "-c", "tar -cf - /etc 2>/dev/null | gzip -1 | wc -c"],
]
MINIMAL_WORKLOAD = [w for w in WORKLOAD if w[0] not in ("python3", "git")]
# a JIT's code churns the translation cache hardest: node (V8) compiling and running a loop
NODE_WORKLOAD = [["node", "-e", "let s = 0; for (let i = 0; i < 2e6; i++) s += i % 7; "
                  "console.log(JSON.stringify({ s, t: [1, 2, 3].map(x => x * s) }))"]]


def pct(xs, p):
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_size(tb, image, execs, step, tmp, workload):
    img = os.path.join(IMAGES, image)
    args = [CAPSEM_VM, "--vmdir", os.path.join(tmp, f"tb{tb}"), "--rm", "--no-egress",
            "--kernel", os.path.join(img, "vmlinux"), "--initrd", os.path.join(img, "initrd.img"),
            "--memory", "1G", "--tcg-tb-mib", str(tb)]
    for name in ("rootfs.erofs", "rootfs.squashfs", "rootfs.img"):
        if os.path.exists(os.path.join(img, name)):
            args += ["--rootfs", os.path.join(img, name)]
            break
    t0 = time.monotonic()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    ev = json.loads(p.stdout.readline())
    if ev.get("event") != "ready":
        raise RuntimeError(ev)
    try:
        assert cc.run(ev["vsock"], ["true"]).code == 0
        boot = (time.monotonic() - t0) * 1000
        qpid = ev["qemu_pid"]
        work = {"mixed": WORKLOAD if image != "minimal" else MINIMAL_WORKLOAD,
                "node": NODE_WORKLOAD}[workload]
        times, curve = [], [(0, rss_mib(qpid))]
        for i in range(execs):
            argv = work[i % len(work)]
            t1 = time.perf_counter()
            r = cc.run(ev["vsock"], argv, io_timeout=300)
            times.append((time.perf_counter() - t1) * 1000)
            if r.code != 0:
                raise RuntimeError(f"{argv}: exit {r.code}: {r.stderr[-300:]!r}")
            if (i + 1) % step == 0:
                curve.append((i + 1, rss_mib(qpid)))
                print(f"  tb {tb:4d} MiB: {i + 1:4d} execs, QEMU RSS {curve[-1][1]:7.1f} MiB",
                      flush=True)
        return {"tb_mib": tb, "boot_to_first_exec_ms": boot,
                "exec_ms": {"p50": pct(times, 50), "p95": pct(times, 95),
                            "mean": statistics.mean(times)},
                "qemu_rss_mib_curve": curve, "qemu_rss_mib_end": curve[-1][1]}
    finally:
        p.terminate()
        p.wait(60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--execs", type=int, default=400)
    ap.add_argument("--step", type=int, default=50)
    ap.add_argument("--sizes", default="0,64,128,256")
    ap.add_argument("--image", default=None)
    ap.add_argument("--workload", choices=("mixed", "node"), default="mixed")
    a = ap.parse_args()
    image = a.image or ("debian" if os.path.exists(os.path.join(IMAGES, "debian")) else "minimal")
    res = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "image": image,
           "workload": a.workload,
           "execs": a.execs, "host": {"cpus": os.cpu_count()}, "runs": []}
    tmp = tempfile.mkdtemp(prefix="capsem-bench-tcg-")
    for tb in (int(x) for x in a.sizes.split(",")):
        print(f"tb-size {tb or 'QEMU default'}:", flush=True)
        res["runs"].append(run_size(tb, image, a.execs, a.step, tmp, a.workload))
    base = next((r for r in res["runs"] if r["tb_mib"] == 0), res["runs"][0])
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    out = os.path.join(ROOT, "bench", "results", "tcg-" + res["time"].replace(":", "") + ".json")
    with open(out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"\nimage {image}, {a.execs} execs; ratios against QEMU's default tb-size in this run")
    print("tb-size   QEMU RSS end   boot to first exec    exec p50        exec p95")
    for r in res["runs"]:
        print(f"{r['tb_mib'] or 'default':>7}   {r['qemu_rss_mib_end']:7.0f} MiB   "
              f"{r['boot_to_first_exec_ms']:7.0f} ms {r['boot_to_first_exec_ms'] / base['boot_to_first_exec_ms']:5.2f}x"
              f"   {r['exec_ms']['p50']:7.1f} ms {r['exec_ms']['p50'] / base['exec_ms']['p50']:5.2f}x"
              f"   {r['exec_ms']['p95']:7.1f} ms {r['exec_ms']['p95'] / base['exec_ms']['p95']:5.2f}x")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
