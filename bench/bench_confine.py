#!/usr/bin/python3
"""bench_confine.py - what the host confinement costs (docs/ARCHITECTURE.md, "QEMU is confined"):
the same measurements with the layers on and off, interleaved (on, off, on, off...) so that the
machine's drift hits both alike, each repeated --rounds times (default 10), medians with the
spread (min-max) and the on/off ratio of the medians.

  boot_to_first_exec  capsem-vm start -> first `true` exec returned (one VM per round)
  exec_roundtrip      median of --execs `true` execs on that VM, per round
  proxy_rps_c64       requests/s at c=64 (wrk, 100-byte bodies, TLS both ways) through
                      tests/helpers/proxy-front, plain vs --seccomp (capsem-vm's filter: the one
                      layer on the proxy's path; Landlock checks opens, which the proxy's request
                      path does not do), --seconds per round

"off" is CAPSEM_CONFINE=0: Landlock, capsem-vm's seccomp allow-list and QEMU's cgroup are off;
QEMU's -sandbox, no_new_privs and network namespace stay (they predate this switch). The switch
exists for this measurement only. Results: bench/results/confine-<UTC time>.json.
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
sys.path.insert(0, os.path.join(ROOT, "bench"))
import capsem_client as cc  # noqa: E402
import bench_proxy as bp  # noqa: E402

BUILD = os.environ.get("CAPSEM_BUILD", os.path.join(ROOT, "build"))
IMAGES = os.environ.get("CAPSEM_IMAGES_DIR", os.path.join(
    os.environ.get("CAPSEM_HOME") or os.path.expanduser("~/.capsem"), "images"))
IMAGE = os.path.join(IMAGES, "minimal")
CAPSEM_VM = os.path.join(BUILD, "src", "vm", "capsem-vm")


def spread(xs):
    m = statistics.median(xs)
    return {"n": len(xs), "median": round(m, 3), "min": round(min(xs), 3),
            "max": round(max(xs), 3), "spread_pct": round(100 * (max(xs) - min(xs)) / m, 1)}


def vm_round(tmp, i, on, execs):
    env = dict(os.environ, CAPSEM_HOME=os.path.join(tmp, "home"))
    if not on:
        env["CAPSEM_CONFINE"] = "0"
    t0 = time.monotonic()
    p = subprocess.Popen([CAPSEM_VM, "--vmdir", os.path.join(tmp, f"vm{i}{'on' if on else 'off'}"),
                          "--rm", "--kernel", os.path.join(IMAGE, "vmlinux"), "--initrd",
                          os.path.join(IMAGE, "initrd.img"), "--memory", "512M"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        ev = json.loads(p.stdout.readline())
        assert ev.get("event") == "ready", ev
        assert cc.run(ev["vsock"], ["true"]).code == 0
        boot = (time.monotonic() - t0) * 1000
        rtt = []
        for _ in range(execs):
            t = time.perf_counter()
            assert cc.run(ev["vsock"], ["true"]).code == 0
            rtt.append((time.perf_counter() - t) * 1000)
        return boot, statistics.median(rtt)
    finally:
        p.terminate()
        p.wait(60)


def proxy_rounds(rounds, secs):
    d = tempfile.mkdtemp(prefix="capsem-bench-confine-")
    os.chmod(d, 0o755)
    procs = []
    try:
        bp.make_certs(d)
        with open(f"{d}/tiny", "wb") as f:
            f.write(b"a" * 100)
        open(f"{d}/nginx.conf", "w").write(f"""
worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{bp.UP} ssl; ssl_certificate {d}/up.crt;
           ssl_certificate_key {d}/up.key; root {d}; }} }}
""")
        bp.sh("nginx", "-c", f"{d}/nginx.conf")
        home = f"{d}/home"
        os.mkdir(home)
        open(f"{home}/user.toml", "w").write(f"""
[policy]
default = "block"
[[rule]]
name = "bench"
action = "allow"
hosts = ["localhost"]
ports = [443]
[upstream]
ca_file = "{d}/ca.crt"
[[upstream.override]]
host = "localhost"
port = 443
connect = "127.0.0.1:{bp.UP}"
""")
        urls = {}
        for mode, extra in (("on", ["--seccomp"]), ("off", [])):
            f = subprocess.Popen([bp.FRONT, "--listen", "127.0.0.1:0", "--name", "localhost",
                                  "--dns-socket", f"{d}/dns-{mode}.sock", *extra],
                                 stdout=subprocess.PIPE, env=dict(os.environ, CAPSEM_HOME=home))
            procs.append(f)
            urls[mode] = f"https://127.0.0.1:{int(f.stdout.readline().split()[1])}"
            bp.wait_url(urls[mode] + "/tiny")
        res = {"on": [], "off": []}
        for i in range(rounds):
            for mode in ("on", "off"):
                rps, _, _ = bp.wrk(urls[mode] + "/tiny", 64, secs)
                res[mode].append(rps)
            print(f"proxy {i + 1}/{rounds}: on {res['on'][-1]:.0f} req/s, off "
                  f"{res['off'][-1]:.0f} req/s", file=sys.stderr, flush=True)
        return res
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        subprocess.run(["nginx", "-c", f"{d}/nginx.conf", "-s", "stop"], capture_output=True)
        subprocess.run(["rm", "-rf", d])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--execs", type=int, default=50)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--no-proxy", action="store_true")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="capsem-bench-confine-")
    boot = {"on": [], "off": []}
    rtt = {"on": [], "off": []}
    for i in range(a.rounds):
        for on in (True, False):
            b, r = vm_round(tmp, i, on, a.execs)
            k = "on" if on else "off"
            boot[k].append(b)
            rtt[k].append(r)
        print(f"vm {i + 1}/{a.rounds}: boot on {boot['on'][-1]:.0f} / off {boot['off'][-1]:.0f} ms,"
              f" exec on {rtt['on'][-1]:.2f} / off {rtt['off'][-1]:.2f} ms", file=sys.stderr,
              flush=True)
    res = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "load_before": os.getloadavg()}
    for name, d in (("boot_to_first_exec_ms", boot), ("exec_roundtrip_ms", rtt)):
        res[name] = {"on": spread(d["on"]), "off": spread(d["off"])}
        res[name]["ratio_on_off"] = round(res[name]["on"]["median"] /
                                          res[name]["off"]["median"], 3)
    if not a.no_proxy:
        p = proxy_rounds(a.rounds, a.seconds)
        res["proxy_rps_c64"] = {"on": spread(p["on"]), "off": spread(p["off"])}
        res["proxy_rps_c64"]["ratio_on_off"] = round(res["proxy_rps_c64"]["on"]["median"] /
                                                     res["proxy_rps_c64"]["off"]["median"], 3)
    res["load_after"] = os.getloadavg()
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    out = os.path.join(ROOT, "bench", "results",
                       time.strftime("confine-%Y%m%dT%H%M%SZ.json", time.gmtime()))
    json.dump(res, open(out, "w"), indent=1)
    print(json.dumps(res, indent=1))
    subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
