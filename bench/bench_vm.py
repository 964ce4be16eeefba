#!/usr/bin/python3
"""bench_vm.py - boot, exec and vsock benchmarks for `make bench`.

Every number is printed beside a baseline measured in the same run, because absolute timings on
shared machines (and under TCG emulation) mean little:

  boot_to_first_exec  capsem-vm start -> first `true` exec returned          (p50 of N)
     baseline         bare QEMU, same kernel + initramfs, PID 1 only writes a line to the serial
                      port (kernel command line "-- bare"): QEMU start -> that line   (p50 of N)
  exec_roundtrip      one `true` exec on a running VM, connect to EXIT        (p50/p99 of M)
     baseline         vsock round trip alone: CONNECT to a port nobody listens on -> RST
  vsock_stream        256 MiB from `head -c` in the guest through exec stdout (MiB/s)
     baseline         the same `head -c` into /dev/null inside the guest (guest CPU speed)

Results: bench/results/vm-<UTC time>.json. Options: --boots N (default 10), --execs M (200).
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
IMAGE = os.path.join(IMAGES, "minimal")
CAPSEM_VM = os.path.join(BUILD, "src", "vm", "capsem-vm")
KERNEL = os.path.join(IMAGE, "vmlinux")
INITRD = os.path.join(IMAGE, "initrd.img")


def pct(xs, p):
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(xs):
    return {"n": len(xs), "p50": pct(xs, 50), "p95": pct(xs, 95), "p99": pct(xs, 99),
            "mean": statistics.mean(xs), "min": min(xs), "max": max(xs)}


def bare_accel():
    try:
        flags = open("/proc/cpuinfo").read()
        kvm = os.access("/dev/kvm", os.R_OK | os.W_OK) and (" vmx" in flags or " svm" in flags)
    except OSError:
        kvm = False
    return "kvm" if kvm else "tcg"


def bare_boot_ms():
    """QEMU with the same machine, kernel and initramfs; PID 1 prints one line and reboots."""
    accel = bare_accel()
    args = ["qemu-system-x86_64", "-M", "microvm,acpi=off,x-option-roms=off,memory-backend=mem",
            "-accel", accel, "-smp", "1", "-m", "512M",
            "-object", "memory-backend-memfd,id=mem,size=512M,share=on",
            "-global", "virtio-mmio.force-legacy=false", "-nodefaults", "-no-user-config",
            "-no-reboot", "-display", "none", "-serial", "stdio",
            "-kernel", KERNEL, "-initrd", INITRD,
            "-append", "console=ttyS0 reboot=t panic=-1 quiet loglevel=1 tsc=reliable -- bare"]
    if accel == "kvm":
        args[5:5] = ["-cpu", "host"]
    t0 = time.monotonic()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    seen = None
    for line in p.stdout:
        if b"capsem-bare-init" in line:
            seen = time.monotonic()
            break
    p.wait(60)
    if seen is None:
        raise RuntimeError("bare boot did not print its line")
    return (seen - t0) * 1000


class VM:
    def __init__(self, d):
        self.t0 = time.monotonic()
        self.p = subprocess.Popen([CAPSEM_VM, "--vmdir", d, "--rm", "--kernel", KERNEL, "--initrd", INITRD,
                                   "--memory", "512M"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        ev = json.loads(self.p.stdout.readline())
        if ev.get("event") != "ready":
            raise RuntimeError(ev)
        self.ready = ev
        self.vsock = ev["vsock"]

    def stop(self):
        self.p.terminate()
        self.p.wait(60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--boots", type=int, default=10)
    ap.add_argument("--execs", type=int, default=200)
    ap.add_argument("--stream-mib", type=int, default=256)
    a = ap.parse_args()
    res = {"accel": bare_accel(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "host": {"cpus": os.cpu_count()}}
    tmp = tempfile.mkdtemp(prefix="capsem-bench-")

    bare, boot, hello = [], [], []
    for i in range(a.boots):
        bare.append(bare_boot_ms())
        t0 = time.monotonic()
        vm = VM(os.path.join(tmp, f"b{i}"))
        r = cc.run(vm.vsock, ["true"])
        assert r.code == 0
        boot.append((time.monotonic() - t0) * 1000)
        hello.append(vm.ready["boot_ms"])
        vm.stop()
        print(f"boot {i + 1}/{a.boots}: bare {bare[-1]:.0f} ms, capsem to first exec {boot[-1]:.0f} ms",
              flush=True)
    res["boot_to_first_exec_ms"] = summary(boot)
    res["boot_to_hello_ms"] = summary(hello)
    res["baseline_bare_boot_ms"] = summary(bare)
    res["boot_ratio_p50"] = res["boot_to_first_exec_ms"]["p50"] / res["baseline_bare_boot_ms"]["p50"]

    vm = VM(os.path.join(tmp, "x"))
    try:
        for _ in range(5):
            cc.run(vm.vsock, ["true"])
        rtt, base = [], []
        for _ in range(a.execs):
            t0 = time.perf_counter()
            r = cc.run(vm.vsock, ["true"])
            rtt.append((time.perf_counter() - t0) * 1000)
            assert r.code == 0
            t0 = time.perf_counter()
            try:
                cc.connect(vm.vsock, port=4999)
            except ConnectionRefusedError:
                pass
            base.append((time.perf_counter() - t0) * 1000)
        res["exec_roundtrip_ms"] = summary(rtt)
        res["baseline_vsock_rst_roundtrip_ms"] = summary(base)

        n = a.stream_mib << 20
        t0 = time.perf_counter()
        s = cc.connect(vm.vsock)
        s.sendall(cc.frame(cc.EXEC, cc.exec_payload(["head", "-c", str(n), "/dev/zero"])) + cc.frame(cc.STDIN))
        got, buf, done = 0, bytearray(), False
        while not done:
            d = s.recv(1 << 20)
            if not d:
                break
            buf += d
            while len(buf) >= 6:
                ln = int.from_bytes(buf[:4], "big")
                t = int.from_bytes(buf[4:6], "big")
                if len(buf) < 6 + ln:
                    break
                if t == cc.STDOUT:
                    got += ln
                elif t == cc.EXIT:
                    done = True
                del buf[:6 + ln]
        s.close()
        dt = time.perf_counter() - t0
        assert got == n, (got, n)
        r = cc.sh(vm.vsock, f"head -c {n} /dev/zero > /dev/null")
        t0 = time.perf_counter()
        r = cc.sh(vm.vsock, f"head -c {n} /dev/zero > /dev/null")
        base_dt = time.perf_counter() - t0
        res["vsock_stream"] = {"mib": a.stream_mib, "seconds": dt, "mib_per_s": a.stream_mib / dt}
        res["baseline_guest_head_devnull"] = {"seconds": base_dt, "mib_per_s": a.stream_mib / base_dt}
    finally:
        vm.stop()

    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    out = os.path.join(ROOT, "bench", "results", "vm-" + res["time"].replace(":", "") + ".json")
    with open(out, "w") as f:
        json.dump(res, f, indent=2)
    b, e = res["boot_to_first_exec_ms"], res["exec_roundtrip_ms"]
    print(f"\naccel: {res['accel']}")
    print(f"boot to first exec   p50 {b['p50']:8.1f} ms   bare QEMU boot p50 {res['baseline_bare_boot_ms']['p50']:8.1f} ms"
          f"   ratio {res['boot_ratio_p50']:.2f}x")
    print(f"exec round trip      p50 {e['p50']:8.2f} ms  p99 {e['p99']:8.2f} ms   vsock RST round trip p50 "
          f"{res['baseline_vsock_rst_roundtrip_ms']['p50']:.2f} ms")
    print(f"vsock stream         {res['vsock_stream']['mib_per_s']:8.1f} MiB/s   guest head>/dev/null "
          f"{res['baseline_guest_head_devnull']['mib_per_s']:.1f} MiB/s")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
