#!/usr/bin/python3
"""bench_dashboard.py - what the dashboard's requests cost as the records grow, in one run.

Through capsem-gateway (what the browser does), with a private CAPSEM_HOME:

  status_ms             GET /api/status: every VM record with its session's usage (the
                        dashboard's list; its live updates are this request, held until a change)
  activity_first_ms     GET /api/vms/{ref}/activity?kind=net&limit=50: the newest page
  activity_last_ms      the same at offset total-50: the oldest page, the older way (OFFSET:
                        SQLite steps over every newer row)
  activity_keyset_ms    the oldest page by its keyset cursor (before=ID, what the UI's Older
                        button sends: a range of the primary key)
each measured twice: small (one running VM, a handful of ledger rows) and large (--records VM
records, --running of them running, and --rows rows in one VM's session ledger). The large ones
are made cheaply: the stopped records are copies of a real stopped VM's record written while
capsemd is down, the rows copies of one blocked request's row written into the session ledger.
Ratios large/small, and large_keyset_vs_first (the oldest page by cursor / the newest page, in
the large run): server-side keyset paging should keep the activity pages flat. Results:
bench/results/dashboard-<UTC time>.json.
"""
import argparse
import http.client
import json
import os
import re
import secrets
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import shutil
import time

from benchlib import CAPSEM, IMAGES, save


def ms(fn, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return {"p50": statistics.median(out), "p99": sorted(out)[max(0, int(n * 0.99) - 1)]}


def grow(dbpath, n):
    """At least n rows in the session ledger's net table: a blocked request's row, copied (the
    VM's own ledger writer keeps its connection; SQLite's locking serialises the two)."""
    db = sqlite3.connect(dbpath, timeout=30)
    if db.execute("SELECT count(*) FROM net").fetchone()[0] == 0:
        db.execute("INSERT INTO net (ts, duration_ms, request_id, pid, comm, dst_ip, dst_port, "
                   "scheme, bytes_up, bytes_down, decision, rule, error) VALUES "
                   "(strftime('%s','now')*1000, 0, '1', 40, 'wget', '93.184.216.34', 80, 'tcp', "
                   "0, 0, 'block', 'direct-ip', 'the address was not given out by Capsem''s DNS')")
    cols = ", ".join(r[1] for r in db.execute("PRAGMA table_info(net)") if r[1] != "id")
    while db.execute("SELECT count(*) FROM net").fetchone()[0] < n:
        db.execute(f"INSERT INTO net ({cols}) SELECT {cols} FROM net")
        db.commit()
    db.commit()
    db.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=50)
    ap.add_argument("--running", type=int, default=4)
    ap.add_argument("--rows", type=int, default=100000)
    ap.add_argument("--calls", type=int, default=50)
    a = ap.parse_args()
    home = tempfile.mkdtemp(prefix="capsem-bench-dashboard-")
    env = dict(os.environ, CAPSEM_HOME=home, CAPSEM_IMAGES_DIR=IMAGES, CAPSEM_IMAGE="minimal",
               CAPSEM_GATEWAY_PORT="0")

    def cli(*args, timeout=600):
        p = subprocess.run([CAPSEM, *args], env=env, capture_output=True, timeout=timeout)
        if p.returncode != 0:
            sys.exit(f"bench_dashboard: capsem {' '.join(args)}: {p.stderr.decode().strip()}")
        return p.stdout.decode()

    def stop_daemon():
        try:
            with open(os.path.join(home, "run", "capsemd.pid")) as f:
                pid = int(f.read().split()[0])
            os.kill(pid, signal.SIGTERM)
            for _ in range(300):
                if not os.path.exists(f"/proc/{pid}"):
                    break
                time.sleep(0.1)
        except (OSError, ValueError, IndexError):
            pass

    def gateway():
        url = cli("ui").strip()
        port, token = re.match(r"http://127\.0\.0\.1:(\d+)/#token=(\w+)", url).groups()
        c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
        hdr = {"Authorization": "Bearer " + token}

        def get(path):
            c.request("GET", path, headers=hdr)
            r = c.getresponse()
            body = r.read()
            if r.status != 200:
                sys.exit(f"bench_dashboard: {path}: {r.status} {body[:200]}")
            return json.loads(body)
        return get

    def measure(get, vm, label):
        total = get(f"/api/vms/{vm}/activity?kind=net&limit=1")["total"]
        last = max(0, total - 50)
        # the oldest page's cursor: one above its newest row (after=0 reads the oldest rows)
        oldest = get(f"/api/vms/{vm}/activity?kind=net&limit=50&after=0")["rows"]
        before = oldest[0]["id"] + 1
        by_cursor = get(f"/api/vms/{vm}/activity?kind=net&limit=50&before={before}")
        by_offset = get(f"/api/vms/{vm}/activity?kind=net&limit=50&offset={last}")
        if [r["id"] for r in by_cursor["rows"]] != [r["id"] for r in by_offset["rows"]]:
            sys.exit("bench_dashboard: the oldest page by cursor and by offset differ")
        return {
            f"{label}_net_rows": total,
            f"{label}_vm_records": len(get("/api/status")["vms"]),
            f"{label}_status_ms": ms(lambda: get("/api/status"), a.calls),
            f"{label}_activity_first_ms":
                ms(lambda: get(f"/api/vms/{vm}/activity?kind=net&limit=50"), a.calls),
            f"{label}_activity_last_ms":
                ms(lambda: get(f"/api/vms/{vm}/activity?kind=net&limit=50&offset={last}"),
                   a.calls),
            f"{label}_activity_keyset_ms":
                ms(lambda: get(f"/api/vms/{vm}/activity?kind=net&limit=50&before={before}"),
                   a.calls),
        }

    res = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **vars(a)}
    try:
        cli("create", "-n", "r0", "--memory", "256M")
        # one blocked request: a real row of the net table to copy
        info = json.loads(cli("info", "r0", "--json"))
        dbpath = os.path.join(home, "sessions", info["session"] + ".db")
        grow(dbpath, 10)
        get = gateway()
        res.update(measure(get, "r0", "small"))
        for i in range(1, a.running):
            cli("create", "-n", f"r{i}", "--memory", "256M")
        cli("create", "-n", "seed", "--memory", "256M")
        cli("stop", "seed")
        seed = json.loads(cli("info", "seed", "--json"))
        stop_daemon()  # VMs outlive the daemon; it re-adopts them
        vms = os.path.join(home, "vms")
        seed_json = json.load(open(os.path.join(vms, seed["id"], "vm.json")))
        for i in range(a.records - a.running - 1):
            vid = secrets.token_hex(6)
            os.makedirs(os.path.join(vms, vid), mode=0o700)
            rec = dict(seed_json, id=vid, name=f"stopped{i}",
                       vmdir=os.path.join(vms, vid))
            with open(os.path.join(vms, vid, "vm.json"), "w") as f:
                json.dump(rec, f)
        grow(dbpath, a.rows)
        res.update(measure(gateway(), "r0", "large"))
    finally:
        p = subprocess.run([CAPSEM, "list", "-a", "--json"], env=env, capture_output=True)
        if p.returncode == 0:
            ids = [v["id"] for v in json.loads(p.stdout)]
            if ids:
                subprocess.run([CAPSEM, "delete", *ids], env=env, capture_output=True,
                               timeout=600)
        stop_daemon()
        shutil.rmtree(home, ignore_errors=True)
    for k in ("status_ms", "activity_first_ms", "activity_last_ms", "activity_keyset_ms"):
        res[k.replace("_ms", "_ratio")] = res["large_" + k]["p50"] / res["small_" + k]["p50"]
    for k in ("last", "keyset"):
        res[f"large_{k}_vs_first"] = (res[f"large_activity_{k}_ms"]["p50"] /
                                      res["large_activity_first_ms"]["p50"])
    save("dashboard", res, 26)


if __name__ == "__main__":
    main()
