#!/usr/bin/python3
"""bench_proxy.py - the egress proxy's cost, measured host-side, beside the same-run baselines.

One nginx HTTPS upstream (throw-away CA, TLS 1.3, keep-alive) serves /tiny (100 B) and /big
(100 MiB). Measured the same way (wrk -t1; curl for the bulk download) against:
  direct     the upstream itself
  mitmproxy  Debian's mitmdump as a reverse MITM (TLS terminated and re-originated, streaming
             bodies over 1 MiB): the peer baseline
  capsem     our proxy through tests/helpers/proxy-front: each TCP connection enters proxy_accept()
             as a guest connection to NAME:443 (policy, TLS with the installation CA, HTTP
             parsing, upstream pool, upstream TLS verified against the test CA), i.e. everything
             but the vsock hop
  keyed      the same front end for a provider's API domain (api.anthropic.com, overridden to
             the same upstream) with a key configured: each upstream connection goes through
             the key broker (capsem-vm --keyd's process: a Unix-socket hop, heads rewritten,
             the upstream TLS in the broker)
Reported: requests/s at c=64, latency p50/p99 at c=1 and c=64, bulk MiB/s, and the ratios
against direct. DNS: queries/s answered by the egress DNS server over its Unix socket (the
socket the vsock backend delivers the guest's port 5007 to), pipelined from one stream.
Needs nginx-light wrk mitmproxy (scripts/install-deps.sh --bench). Results: bench/results/.
"""
import argparse
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("CAPSEM_BUILD", os.path.join(ROOT, "build"))
FRONT = os.path.join(BUILD, "tests", "helpers", "proxy-front")
UP, MITM = 18443, 18444


def sh(*a, **kw):
    return subprocess.run(a, check=True, capture_output=True, **kw)


def make_certs(d):
    sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
       "-nodes", "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.crt", "-days", "2",
       "-subj", "/CN=bench-ca")
    sh("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
       "-keyout", f"{d}/up.key", "-out", f"{d}/up.csr", "-subj", "/CN=localhost")
    open(f"{d}/ext", "w").write(
        "subjectAltName=DNS:localhost,DNS:api.anthropic.com,IP:127.0.0.1\n")
    sh("openssl", "x509", "-req", "-in", f"{d}/up.csr", "-CA", f"{d}/ca.crt", "-CAkey",
       f"{d}/ca.key", "-CAcreateserial", "-out", f"{d}/up.crt", "-days", "2",
       "-extfile", f"{d}/ext")


def wait_url(url, host="localhost", timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = subprocess.run(["curl", "-sk", "-H", f"Host: {host}", "-o", "/dev/null", "-w",
                            "%{http_code}", url], capture_output=True)
        if r.stdout == b"200":
            return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def us(v):
    v = v.strip()
    for suf, k in (("us", 1), ("ms", 1000), ("s", 1e6)):
        if v.endswith(suf):
            return float(v[:-len(suf)]) * k
    return float(v) * 1e6


def wrk(url, conns, secs, host="localhost"):
    # the proxy refuses a Host that is not the connection's name
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{secs}s", "--latency",
                          "-H", f"Host: {host}", url],
                         capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"{url}: errors under load:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = us(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = us(re.search(r"\s99%\s+(\S+)", out).group(1))
    return rps, p50, p99


def measure(name, base, secs):
    host = "api.anthropic.com" if name == "keyed" else "localhost"
    rps64, p50_64, p99_64 = wrk(base + "/tiny", 64, secs, host)
    _, p50_1, p99_1 = wrk(base + "/tiny", 1, secs, host)
    r = subprocess.run(["curl", "-sk", "-H", f"Host: {host}", "-o", "/dev/null", "-w",
                        "%{speed_download}", base + "/big"], capture_output=True, text=True,
                       check=True)
    bulk = float(r.stdout) / 1048576
    res = {"rps_c64": rps64, "p50_us_c1": p50_1, "p99_us_c1": p99_1, "p50_us_c64": p50_64,
           "p99_us_c64": p99_64, "bulk_mib_s": round(bulk, 1)}
    print(f"  {name:10s} {rps64:9.0f} req/s c=64   p50 {p50_1:7.0f} us c=1   "
          f"p99 {p99_1:7.0f} us c=1   {bulk:7.1f} MiB/s", file=sys.stderr)
    return res


def dns_qps(sock_path, n=20000):
    """Pipelined A queries for one allowed name over the DNS stream; answers/s."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    qname = b"".join(bytes([len(p)]) + p for p in b"localhost".split(b".")) + b"\0"
    msgs = []
    for i in range(n):
        q = struct.pack(">HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1)
        msgs.append(struct.pack(">H", len(q)) + q)
    data = b"".join(msgs)
    t0 = time.monotonic()
    s.sendall(data)
    got, buf = 0, b""
    while got < n:
        b = s.recv(1 << 20)
        if not b:
            break
        buf += b
        while len(buf) >= 2:
            m = struct.unpack(">H", buf[:2])[0]
            if len(buf) < 2 + m:
                break
            buf = buf[2 + m:]
            got += 1
    dt = time.monotonic() - t0
    s.close()
    return round(got / dt)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=8)
    args = ap.parse_args()
    for t in ("nginx", "wrk", "mitmdump", "curl", "openssl"):
        if not shutil.which(t):
            sys.exit(f"missing {t}: scripts/install-deps.sh --bench")
    if not os.path.exists(FRONT):
        sys.exit(f"missing {FRONT}: build first")
    d = tempfile.mkdtemp(prefix="capsem-bench-proxy-")
    os.chmod(d, 0o755)
    procs = []
    try:
        make_certs(d)
        with open(f"{d}/tiny", "wb") as f:
            f.write(b"a" * 100)
        with open(f"{d}/big", "wb") as f:
            f.truncate(100 << 20)
        open(f"{d}/nginx.conf", "w").write(f"""
worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{UP} ssl; ssl_certificate {d}/up.crt;
           ssl_certificate_key {d}/up.key; root {d}; }} }}
""")
        sh("nginx", "-c", f"{d}/nginx.conf")
        procs.append(subprocess.Popen(
            ["mitmdump", "-q", "--mode", f"reverse:https://127.0.0.1:{UP}", "--set",
             f"ssl_verify_upstream_trusted_ca={d}/ca.crt", "--set", "stream_large_bodies=1m",
             "-p", str(MITM), "--listen-host", "127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        home = f"{d}/home"
        os.mkdir(home)
        open(f"{home}/user.toml", "w").write(f"""
[policy]
default = "block"
[[rule]]
name = "bench"
action = "allow"
hosts = ["localhost", "api.anthropic.com"]
ports = [443]
[upstream]
ca_file = "{d}/ca.crt"
[[upstream.override]]
host = "localhost"
port = 443
connect = "127.0.0.1:{UP}"
[[upstream.override]]
host = "api.anthropic.com"
port = 443
connect = "127.0.0.1:{UP}"
""")
        open(f"{home}/credentials", "w").write('[anthropic]\napi_key = "sk-ant-bench"\n')
        os.chmod(f"{home}/credentials", 0o600)
        env = dict(os.environ, CAPSEM_HOME=home)
        env.pop("ANTHROPIC_API_KEY", None)
        ports = {}
        for name, sock in (("localhost", "dns.sock"), ("api.anthropic.com", "dns2.sock")):
            front = subprocess.Popen([FRONT, "--listen", "127.0.0.1:0", "--name", name,
                                      "--dns-socket", f"{d}/{sock}"],
                                     stdout=subprocess.PIPE, env=env)
            procs.append(front)
            ports[name] = int(front.stdout.readline().split()[1])
        urls = {"direct": f"https://127.0.0.1:{UP}", "mitmproxy": f"https://127.0.0.1:{MITM}",
                "capsem": f"https://127.0.0.1:{ports['localhost']}",
                "keyed": f"https://127.0.0.1:{ports['api.anthropic.com']}"}
        for k, u in urls.items():
            wait_url(u + "/tiny", "api.anthropic.com" if k == "keyed" else "localhost")
        print("proxy benchmark (host-side; TLS both ways; same upstream):", file=sys.stderr)
        res = {k: measure(k, u, args.seconds) for k, u in urls.items()}
        res["dns_qps"] = dns_qps(f"{d}/dns.sock")
        print(f"  dns        {res['dns_qps']} queries/s (pipelined, one stream)", file=sys.stderr)
        dct = res["direct"]
        for k in ("mitmproxy", "capsem", "keyed"):
            r = res[k]
            r["rps_vs_direct"] = round(r["rps_c64"] / dct["rps_c64"], 3)
            r["added_p50_us_c1"] = round(r["p50_us_c1"] - dct["p50_us_c1"], 1)
            r["added_p50_us_c64"] = round(r["p50_us_c64"] - dct["p50_us_c64"], 1)
            r["bulk_vs_direct"] = round(r["bulk_mib_s"] / max(dct["bulk_mib_s"], 0.1), 3)
        res["keyed"]["rps_vs_capsem"] = round(res["keyed"]["rps_c64"] /
                                              res["capsem"]["rps_c64"], 3)
        res["goals"] = {"rps_vs_direct>=0.5": res["capsem"]["rps_vs_direct"] >= 0.5,
                        "added_p50_c1<=250us": res["capsem"]["added_p50_us_c1"] <= 250,
                        "bulk_vs_direct>=0.7": res["capsem"]["bulk_vs_direct"] >= 0.7}
        os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
        out = os.path.join(ROOT, "bench", "results",
                           time.strftime("proxy-%Y%m%dT%H%M%SZ.json", time.gmtime()))
        json.dump(res, open(out, "w"), indent=2)
        print(json.dumps(res, indent=2))
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["nginx", "-c", f"{d}/nginx.conf", "-s", "stop"], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
