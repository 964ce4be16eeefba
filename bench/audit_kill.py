#!/usr/bin/python3
"""audit_kill.py - is every exec on record when capsemd is killed under load?

Boots --vms named VMs (minimal image), runs --workers concurrent exec loops per VM through the
CLI, kills capsemd with SIGKILL after --before seconds (the next CLI call starts a new daemon,
which re-adopts the VMs), keeps the loops going for --after seconds, then compares:

  started   execs the clients started (each prints a unique marker first thing in the guest)
  ran       markers whose output reached a client: the command visibly ran in the guest
  rows      exec rows in the VMs' session ledgers that carry a marker
  unended   rows whose end was never seen (error set, no exit status): the ones cut by the kill

Every marker in `ran` must have a row; the run fails otherwise. Results:
bench/results/audit-<UTC time>.json. Needs the minimal image (make image).
"""
import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("CAPSEM_BUILD", os.path.join(ROOT, "build"))
CAPSEM = os.path.join(BUILD, "src", "cli", "capsem")
IMAGES = os.environ.get("CAPSEM_IMAGES_DIR", os.path.join(
    os.environ.get("CAPSEM_HOME") or os.path.expanduser("~/.capsem"), "images"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vms", type=int, default=2)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--before", type=float, default=30)
    ap.add_argument("--after", type=float, default=20)
    a = ap.parse_args()
    home = tempfile.mkdtemp(prefix="capsem-audit-")
    env = dict(os.environ, CAPSEM_HOME=home, CAPSEM_IMAGES_DIR=IMAGES)

    def cli(*args, timeout=300):
        return subprocess.run([CAPSEM, *args], env=env, capture_output=True, timeout=timeout)

    names = [f"a{i}" for i in range(a.vms)]
    for n in names:
        p = cli("create", "-n", n, "--image", "minimal")
        if p.returncode:
            sys.exit(f"create {n}: {p.stderr.decode()}")
    started, ran, lock = set(), set(), threading.Lock()
    stop = threading.Event()

    def worker(vm, w):
        i = 0
        while not stop.is_set():
            marker = f"m-{vm}-{w}-{i}"
            i += 1
            with lock:
                started.add(marker)
            try:
                p = cli("exec", vm, "--", "sh", "-c", f"echo {marker}; sleep 0.3", timeout=120)
                if marker.encode() in p.stdout:
                    with lock:
                        ran.add(marker)
            except subprocess.TimeoutExpired:
                pass

    threads = [threading.Thread(target=worker, args=(vm, w)) for vm in names
               for w in range(a.workers)]
    for t in threads:
        t.start()
    time.sleep(a.before)
    pid = int(open(os.path.join(home, "run", "capsemd.pid")).read().split()[0])
    os.kill(pid, signal.SIGKILL)
    t_kill = time.time()
    time.sleep(a.after)
    stop.set()
    for t in threads:
        t.join()
    time.sleep(1)  # the writer's last batch

    rows, unended = {}, 0
    for n in names:
        info = json.loads(cli("info", n, "--json").stdout)
        db = os.path.join(home, "sessions", info["session"] + ".db")
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        for argv, exit_code, sig, err in con.execute(
                "SELECT argv, exit_code, signal, error FROM exec"):
            cmd = json.loads(argv)[-1] if argv else ""
            if cmd.startswith("echo m-"):
                m = cmd.split()[1].rstrip(";")
                rows[m] = (exit_code, sig, err)
                if exit_code is None and sig is None:
                    unended += 1
        con.close()
    cli("delete", *names)
    pid = int(open(os.path.join(home, "run", "capsemd.pid")).read().split()[0])
    os.kill(pid, signal.SIGTERM)

    missing = sorted(ran - rows.keys())
    res = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "vms": a.vms,
           "workers_per_vm": a.workers, "killed_at": t_kill, "started": len(started),
           "ran": len(ran), "rows": len(rows), "unended_rows": unended,
           "ran_without_row": missing}
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    out = os.path.join(ROOT, "bench", "results", "audit-" + res["time"].replace(":", "") + ".json")
    with open(out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"execs started {len(started)}, visibly ran {len(ran)}, ledger rows {len(rows)} "
          f"({unended} without an end), ran without a row: {len(missing)}")
    print(f"results: {out}")
    sys.exit(1 if missing else 0)


if __name__ == "__main__":
    main()
