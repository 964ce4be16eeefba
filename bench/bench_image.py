#!/usr/bin/python3
"""bench_image.py - guest image benchmarks: build, size, boot, root file system reads, AI CLIs.

  build_cold_layers   seconds of each rootfs layer when it was built (base: mmdebstrap + node,
                      npm: the AI CLIs, pack: mksquashfs/mkfs.erofs), from the image's build.json
  build_warm          `capsem-builder image --rootfs` with everything cached (verify + install)
  size                rootfs image bytes, and the whole image (kernel + initramfs + rootfs)
  boot_to_first_exec  capsem-vm start -> first `true` exec returned, p50 of N, for each image
  seq_read            MiB/s reading every file over 1 MiB of the root image (page cache dropped)
  rand_read_4k        4 KiB preads at random aligned offsets of the largest file (IOPS)
  cli_version         `CLI --version` wall time in the guest, p50 of 3 (TCG: slow; ratios count)

Images: --images debian,minimal (the first ones must have a rootfs for the read tests).
Results: bench/results/image-<UTC time>.json and stdout. Timings under TCG are only meaningful
as ratios (DESIGN.md §3).
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
GUEST = os.environ.get("CAPSEM_GUEST_BIN", os.path.join(ROOT, "build-guest", "src", "guest",
                                                        "capsem-guest"))
IMAGES = os.environ.get("CAPSEM_IMAGES_DIR", os.path.join(
    os.environ.get("CAPSEM_HOME") or os.path.expanduser("~/.capsem"), "images"))
CAPSEM_VM = os.path.join(BUILD, "src", "vm", "capsem-vm")
BUILDER = os.path.join(BUILD, "src", "builder", "capsem-builder")

RAND_READ = r'''
import os, random, time, sys
path = sys.argv[1]; n = int(sys.argv[2])
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size
blocks = size // 4096
rnd = random.Random(7)
offs = [rnd.randrange(blocks) * 4096 for _ in range(n)]
t = time.perf_counter()
for o in offs:
    os.pread(fd, 4096, o)
dt = time.perf_counter() - t
print(n / dt)
'''


def boot(image, vmdir, memory="2G"):
    m = json.load(open(os.path.join(image, "manifest.json")))
    args = [CAPSEM_VM, "--vmdir", vmdir, "--kernel", os.path.join(image, "vmlinux"),
            "--initrd", os.path.join(image, "initrd.img"), "--cpus", "2", "--memory", memory]
    if "rootfs" in m:
        args += ["--rootfs", os.path.join(image, m["rootfs"]["file"])]
    t0 = time.monotonic()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ev = json.loads(p.stdout.readline())
    assert ev.get("event") == "ready", ev
    r = cc.sh(ev["vsock"], "true")
    assert r.status == 0
    return p, ev["vsock"], (time.monotonic() - t0) * 1000


def stop(p):
    p.terminate()
    try:
        p.wait(60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def sh(vsock, script, timeout=900):
    r = cc.sh(vsock, script, timeout_ms=timeout * 1000, io_timeout=timeout + 60)
    if r.status != 0:
        raise RuntimeError(f"{script!r}: {r.status} {r.stdout!r} {r.stderr!r}")
    return r.stdout.decode()


def image_bench(name, boots, tmp):
    image = os.path.join(IMAGES, name)
    m = json.load(open(os.path.join(image, "manifest.json")))
    res = {"name": name, "rootfs": m.get("rootfs", {}).get("file")}
    res["size"] = {k: m[k]["size"] for k in ("kernel", "initrd", "rootfs") if k in m}
    info_path = os.path.join(image, "build.json")
    if os.path.exists(info_path):
        info = json.load(open(info_path))
        res["build_cold_layers"] = dict(info.get("layer_seconds") or {},
                                        pack=info.get("pack_seconds"),
                                        image=info.get("seconds"))
        res["compression"] = info.get("compression")
    times = []
    for i in range(boots):
        p, vsock, ms = boot(image, os.path.join(tmp, f"{name}-{i}"))
        times.append(ms)
        if i < boots - 1:
            stop(p)
    res["boot_to_first_exec_ms"] = {"p50": statistics.median(times), "all": times}
    try:
        if "rootfs" in m:
            base = "/mnt/capsem-rootfs"
            out = sh(vsock, f"sync; echo 3 > /proc/sys/vm/drop_caches; "
                     f"find {base} -xdev -type f -size +1M > /tmp/big; "
                     f"b=$(cat /tmp/big | xargs stat -c %s | awk '{{s+=$1}} END {{print s}}'); "
                     f"a=$(date +%s%N); cat $(cat /tmp/big) > /dev/null; z=$(date +%s%N); "
                     f"echo $b $(( (z-a)/1000000 ))")
            nbytes, ms = map(int, out.split())
            res["seq_read"] = {"bytes": nbytes, "ms": ms,
                               "mib_s": round(nbytes / 1048576 / (ms / 1000), 1)}
            big = sh(vsock, "xargs ls -S < /tmp/big | head -1").strip()
            cc.run(vsock, ["sh", "-c", "cat > /tmp/rr.py"], stdin=RAND_READ.encode())
            iops = sh(vsock, f"echo 3 > /proc/sys/vm/drop_caches; python3 /tmp/rr.py {big} 3000")
            res["rand_read_4k"] = {"file": big, "iops": round(float(iops), 0)}
            clis = {}
            try:
                doc = json.loads(sh(vsock, "cat /etc/capsem/image.json"))
                names = sorted(doc.get("cli_versions", {}))
            except RuntimeError:
                names = []
            for cli in ["python3 -c pass", "node -e 0"] + [f"{c} --version" for c in names]:
                ts = []
                for _ in range(3):
                    out = sh(vsock, f"a=$(date +%s%N); {cli} >/dev/null 2>&1; b=$(date +%s%N); "
                                    f"echo $(( (b-a)/1000000 ))")
                    ts.append(int(out.strip()))
                clis[cli] = {"p50_ms": statistics.median(ts), "all": ts}
            res["start_ms"] = clis
    finally:
        stop(p)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", default="debian,minimal")
    ap.add_argument("--boots", type=int, default=3)
    ap.add_argument("--no-build", action="store_true")
    a = ap.parse_args()
    out = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "images": []}
    if not a.no_build:
        t = time.monotonic()
        r = subprocess.run([BUILDER, "image", "--rootfs", "--guest-bin", GUEST, "--images-dir",
                            IMAGES], capture_output=True, text=True)
        out["build_warm_s"] = round(time.monotonic() - t, 2) if r.returncode == 0 else None
    with tempfile.TemporaryDirectory(prefix="capsem-bench-image-") as tmp:
        for name in a.images.split(","):
            out["images"].append(image_bench(name, a.boots, tmp))
            print(json.dumps(out["images"][-1]), flush=True)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    path = os.path.join(ROOT, "bench", "results",
                        "image-" + time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime()) + ".json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps(out, indent=2))
    print("results:", path)


if __name__ == "__main__":
    main()
