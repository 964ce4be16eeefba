#!/usr/bin/python3
"""bench_fork.py - fork images: how long a fork takes and what booting from one costs.

In one run, with this tree's build, a private CAPSEM_HOME and a private images directory holding
a hard-linked copy of the Debian image:

  fork_named_s      `capsem fork` of a running named VM after N MiB of changes (default 100:
                    random bytes under /usr/local, so nothing compresses or dedups them)
  fork_stopped_s    the same VM stopped
  fork_ephemeral_s  an ephemeral VM with the same N MiB (streamed out of guest memory)
  create_base_s     `capsem create --image debian` to the first exec's answer (median of --boots)
  create_fork_s     the same from the fork image
Ratios: create_fork_s / create_base_s. Under TCG on this machine, not KVM: say so when quoting.
Results: bench/results/fork-<UTC time>.json. Options: --mib N, --boots N.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import CAPSEM, IMAGES, accel, save


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=100)
    ap.add_argument("--boots", type=int, default=3)
    a = ap.parse_args()
    if not os.path.exists(os.path.join(IMAGES, "debian", "manifest.json")):
        sys.exit(f"bench_fork: no debian image in {IMAGES} (make image-debian)")
    tmp = tempfile.mkdtemp(prefix="capsem-bench-fork-")
    home, images = os.path.join(tmp, "home"), os.path.join(tmp, "images")
    os.makedirs(home)
    os.makedirs(images)
    subprocess.run(["cp", "-al", os.path.join(IMAGES, "debian"), images], check=True)
    env = dict(os.environ, CAPSEM_HOME=home, CAPSEM_IMAGES_DIR=images)
    env.pop("CAPSEM_IMAGE", None)

    def cli(*args, timeout=900):
        p = subprocess.run([CAPSEM, *args], capture_output=True, env=env, timeout=timeout)
        if p.returncode != 0:
            sys.exit(f"bench_fork: capsem {' '.join(args)}: {p.stderr.decode().strip()}")
        return p.stdout.decode()

    def timed(*args):
        t = time.monotonic()
        cli(*args)
        return time.monotonic() - t

    def fill(vm):
        cli("exec", vm, "--", "sh", "-c",
            f"mkdir -p /usr/local/lib/blob && head -c {a.mib}M /dev/urandom "
            f"> /usr/local/lib/blob/data && sync")

    def boot(image, i):
        t = time.monotonic()
        vid = cli("create", "--image", image, "--memory", "512M").strip()
        cli("exec", vid, "--", "true")
        dt = time.monotonic() - t
        cli("delete", vid)
        return dt

    r = {"mib": a.mib, "accel": accel()}
    try:
        cli("create", "-n", "src", "--image", "debian", "--memory", "512M")
        fill("src")
        r["fork_named_s"] = timed("fork", "src", "f-named")
        cli("stop", "src")
        r["fork_stopped_s"] = timed("fork", "src", "f-stopped")
        eph = cli("create", "--image", "debian", "--memory", "512M").strip()
        fill(eph)
        r["fork_ephemeral_s"] = timed("fork", eph, "f-eph")
        cli("delete", eph)
        base = [boot("debian", i) for i in range(a.boots)]
        fork = [boot("f-named", i) for i in range(a.boots)]
        r["create_base_s"] = statistics.median(base)
        r["create_fork_s"] = statistics.median(fork)
        r["create_base_all"], r["create_fork_all"] = base, fork
        r["create_fork_ratio"] = r["create_fork_s"] / r["create_base_s"]
        cli("delete", "src")
    finally:
        subprocess.run([CAPSEM, "purge", "-f"], capture_output=True, env=env, timeout=300)
        try:  # the private daemon
            with open(os.path.join(home, "run", "capsemd.pid")) as f:
                os.kill(int(f.read().split()[0]), signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            pass
        shutil.rmtree(tmp, ignore_errors=True)
    save("fork", r, 20)


if __name__ == "__main__":
    main()
