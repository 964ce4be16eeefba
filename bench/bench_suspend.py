#!/usr/bin/python3
"""bench_suspend.py - suspend, resume and snapshot starts against cold boots, in one run.

With this tree's build, a private CAPSEM_HOME and the image named by --image (default minimal):

  create_cold_s       `capsem create --suspendable` to the first exec's answer, snapshot starts
                      off (CAPSEM_SNAPSHOT_START=0 for that daemon): a cold boot (median)
  create_first_s      the first create of a kind with snapshot starts on: cold boot of the
                      template VM, its save, then the restore
  create_restored_s   later creates of that kind: restored from the saved state (median)
  suspend_s           `capsem suspend` of a VM booted cold (its RAM in its own file; median)
  resume_s            `capsem resume` to the first exec's answer (median)
  state_kib           the saved device state's size
Ratios against create_cold_s. Under TCG on this machine, not KVM: say so when quoting.
Results: bench/results/suspend-<UTC time>.json. Options: --image NAME, --runs N, --memory SIZE.
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


class Home:
    """A private CAPSEM_HOME with its own daemon (started on demand by the CLI)."""

    def __init__(self, root, name, **env):
        self.path = os.path.join(root, name)
        os.makedirs(self.path)
        self.env = dict(os.environ, CAPSEM_HOME=self.path, CAPSEM_IMAGES_DIR=IMAGES, **env)

    def cli(self, *args, timeout=900):
        p = subprocess.run([CAPSEM, *args], capture_output=True, env=self.env, timeout=timeout)
        if p.returncode != 0:
            sys.exit(f"bench_suspend: capsem {' '.join(args)}: {p.stderr.decode().strip()}")
        return p.stdout.decode()

    def timed(self, *cmds):
        t = time.monotonic()
        for c in cmds:
            self.cli(*c)
        return time.monotonic() - t

    def close(self):
        subprocess.run([CAPSEM, "purge", "-f"], capture_output=True, env=self.env, timeout=300)
        for v in json.loads(self.cli("list", "-a", "--json") or "[]"):
            subprocess.run([CAPSEM, "delete", v["id"]], capture_output=True, env=self.env,
                           timeout=300)
        try:
            with open(os.path.join(self.path, "run", "capsemd.pid")) as f:
                os.kill(int(f.read().split()[0]), signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="minimal")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--memory", default="256M")
    a = ap.parse_args()
    if not os.path.exists(os.path.join(IMAGES, a.image, "manifest.json")):
        sys.exit(f"bench_suspend: no {a.image} image in {IMAGES}")
    tmp = tempfile.mkdtemp(prefix="capsem-bench-suspend-")
    cold = Home(tmp, "cold", CAPSEM_SNAPSHOT_START="0")
    snap = Home(tmp, "snap")
    mk = lambda name: ("create", "-n", name, "--suspendable", "--image", a.image,
                       "--memory", a.memory)
    first_exec = lambda name: ("exec", name, "--", "true")
    r = {"image": a.image, "memory": a.memory,
         "accel": accel()}
    try:
        r["create_cold_all"] = [cold.timed(mk(f"c{i}"), first_exec(f"c{i}"))
                                for i in range(a.runs)]
        sus, res, size = [], [], 0
        for i in range(a.runs):
            cold.cli("exec", "c0", "--", "sh", "-c", f"echo {i} > /tmp/mark")
            sus.append(cold.timed(("suspend", "c0")))
            size = os.path.getsize(os.path.join(cold.path, "vms", json.loads(
                cold.cli("info", "c0", "--json"))["id"], "suspend.state"))
            res.append(cold.timed(("resume", "c0"), first_exec("c0")))
            if cold.cli("exec", "c0", "--", "cat", "/tmp/mark").strip() != str(i):
                sys.exit("bench_suspend: the resumed VM lost its memory")
        r["create_first_s"] = snap.timed(mk("s0"), first_exec("s0"))
        r["create_restored_all"] = [snap.timed(mk(f"s{i}"), first_exec(f"s{i}"))
                                    for i in range(1, a.runs + 1)]
        r["suspend_all"], r["resume_all"], r["state_kib"] = sus, res, size // 1024
    finally:
        cold.close()
        snap.close()
        shutil.rmtree(tmp, ignore_errors=True)
    for k in ("create_cold", "create_restored", "suspend", "resume"):
        r[k + "_s"] = statistics.median(r[k + "_all"])
    r["create_restored_ratio"] = r["create_restored_s"] / r["create_cold_s"]
    r["resume_ratio"] = r["resume_s"] / r["create_cold_s"]
    save("suspend", r, 22)


if __name__ == "__main__":
    main()
