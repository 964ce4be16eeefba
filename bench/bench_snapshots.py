#!/usr/bin/python3
"""bench_snapshots.py - workspace snapshots (capsemd, src/workspace/snapstore.c) against `cp -a`.

A host folder of N files (default 10,000) totalling about S MiB (default 1024) of random bytes is
the workspace of one named VM (capsemd, this tree's build, a private CAPSEM_HOME; the VM is
stopped once created: snapshots are host-side and need no guest). Measured in one run:

  cp_a_s            `cp -a` of the tree to a fresh directory on the same file system
  cp_a_sync_s       the same followed by `sync` (a snapshot makes its objects durable: syncfs)
  first_s           the first snapshot (every file hashed and copied into the store)
  unchanged_s       a snapshot of the unchanged tree (the stat cache: nothing read)
  changed10_s       a snapshot after 10 files were rewritten
  revert1_s         a revert of one file (of the 10)
  revert_tree_s     a revert of a directory of 100 files of which one changed

Each as the wall time of the `capsem snapshot ...` command (CLI, API, worker thread) and, for
snapshots, the library's own elapsed_ms. Ratios are against cp -a measured in the same run; the
issue's goals: first snapshot <= cp -a, 10 changed files <= 0.2 s. Page cache warm for all
(the tree was just written). Results: bench/results/snapshots-<UTC time>.json.
Options: --files N, --mib S.
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("CAPSEM_BUILD", os.path.join(ROOT, "build"))
IMAGES = os.environ.get("CAPSEM_IMAGES_DIR", os.path.join(
    os.environ.get("CAPSEM_HOME") or os.path.expanduser("~/.capsem"), "images"))
CAPSEM = os.path.join(BUILD, "src", "cli", "capsem")


def cli(home, *args, timeout=3600):
    env = dict(os.environ, CAPSEM_HOME=home, CAPSEM_IMAGES_DIR=IMAGES,
               CAPSEM_SNAPSHOT_INTERVAL_S="0")
    p = subprocess.run([CAPSEM, *args], capture_output=True, env=env, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"capsem {' '.join(args)}: {p.stderr.decode()[-2000:]}")
    return p.stdout.decode()


def timed(home, *args):
    t = time.monotonic()
    out = json.loads(cli(home, "snapshot", *args, "--json"))
    return time.monotonic() - t, out


def make_tree(ws, files, mib):
    rnd = random.Random(42)
    avg = mib * (1 << 20) // files
    sizes = [max(1, int(rnd.expovariate(1 / avg))) for _ in range(files)]
    scale = mib * (1 << 20) / sum(sizes)
    blob = os.urandom(4 << 20)
    paths = []
    per_dir = 100
    for i in range(files):
        d = os.path.join(ws, f"d{i // per_dir:04d}")
        if i % per_dir == 0:
            os.makedirs(d)
        p = os.path.join(d, f"f{i % per_dir:03d}.dat")
        n = max(1, min(int(sizes[i] * scale), 64 << 20))
        with open(p, "wb") as f:
            f.write(os.urandom(16))  # every file distinct
            left = n
            while left > 0:
                k = min(left, len(blob))
                off = rnd.randrange(0, len(blob) - k + 1)
                f.write(blob[off:off + k])
                left -= k
        paths.append(p)
    return paths


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--mib", type=int, default=1024)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="capsem-bench-snap-")
    home, ws = os.path.join(tmp, "home"), os.path.join(tmp, "ws")
    os.makedirs(home)
    os.makedirs(ws)
    res = {"files": a.files, "mib": a.mib}
    try:
        t = time.monotonic()
        paths = make_tree(ws, a.files, a.mib)
        subprocess.run(["sync"], check=True)
        res["tree_bytes"] = sum(os.path.getsize(p) for p in paths)
        print(f"tree: {a.files} files, {res['tree_bytes'] / (1 << 20):.0f} MiB "
              f"({time.monotonic() - t:.1f} s to write)", flush=True)
        cli(home, "create", "-n", "bench", "--image", "minimal", "--memory", "256M",
            "--workspace", ws)
        cli(home, "stop", "bench")
        # the baseline, in the same run, on the same file system
        t = time.monotonic()
        subprocess.run(["cp", "-a", ws, os.path.join(tmp, "copy")], check=True)
        res["cp_a_s"] = time.monotonic() - t
        t = time.monotonic()
        subprocess.run(["sync"], check=True)
        res["cp_a_sync_s"] = res["cp_a_s"] + time.monotonic() - t
        shutil.rmtree(os.path.join(tmp, "copy"))
        subprocess.run(["sync"], check=True)
        print(f"cp -a {res['cp_a_s']:.2f} s (+ sync {res['cp_a_sync_s']:.2f} s)", flush=True)

        res["first_s"], r = timed(home, "create", "bench", "first")
        res["first_lib_ms"] = r["elapsed_ms"]
        res["first_hashed_files"] = r["hashed_files"]
        res["unchanged_s"], r = timed(home, "create", "bench", "unchanged")
        res["unchanged_lib_ms"] = r["elapsed_ms"]
        res["unchanged_hashed_files"] = r["hashed_files"]
        changed = random.Random(7).sample(paths, 10)
        time.sleep(0.02)
        for p in changed:
            with open(p, "r+b") as f:
                f.write(os.urandom(64))
        res["changed10_s"], r = timed(home, "create", "bench", "changed10")
        res["changed10_lib_ms"] = r["elapsed_ms"]
        res["changed10_hashed_files"] = r["hashed_files"]
        one = os.path.relpath(changed[0], ws)
        res["revert1_s"], r = timed(home, "revert", "bench", one, "--from", "first")
        assert r["written"] == [one], r
        tree = os.path.dirname(os.path.relpath(changed[1], ws))
        res["revert_tree_s"], r = timed(home, "revert", "bench", tree, "--from", "first")
        assert r["errors"] == [] and len(r["written"]) >= 1, r
        res["ratios_vs_cp_a"] = {k: round(res[k] / res["cp_a_s"], 3)
                                 for k in ("first_s", "unchanged_s", "changed10_s", "revert1_s",
                                           "revert_tree_s")}
        res["first_vs_cp_a_sync"] = round(res["first_s"] / res["cp_a_sync_s"], 3)
        store = os.path.join(home, "vms")
        res["store_bytes"] = sum(os.path.getsize(os.path.join(dp, f))
                                 for dp, _, fs in os.walk(store) for f in fs
                                 if "/snapshots/" in os.path.join(dp, f))
        cli(home, "delete", "bench")
    finally:
        try:  # the daemon this run started (its pid file names it)
            os.kill(int(open(os.path.join(home, "run", "capsemd.pid")).read().split()[0]),
                    signal.SIGTERM)
            time.sleep(1)
        except (OSError, ValueError, IndexError):
            pass
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(res, indent=1))
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    out = os.path.join(ROOT, "bench", "results",
                       time.strftime("snapshots-%Y%m%dT%H%M%SZ.json", time.gmtime()))
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    print("results:", out)


if __name__ == "__main__":
    main()
