#!/usr/bin/python3
"""bench_containerd.py - `ctr run` to first output with the Capsem runtime, against runc and
against `capsem run` of the same command, measured in one run (ratios are what counts: the VMs
run under TCG on the build machines).

  shim_first_output_ms    ctr run --rm --runtime io.containerd.capsem.v2 IMG ID echo ready:
                          process start -> first byte of stdout (a VM boot + the container start)
  shim_total_ms           ... -> ctr exits (the VM deleted)
  runc_first_output_ms    the same with io.containerd.runc.v2 (Debian's runc)
  runc_total_ms
  capsem_run_first_output_ms / capsem_run_total_ms
                          capsem run -- echo ready (minimal image; the CLI's own path)

  workspace_transport     what shared the pod directory (the pod VM's workspace) into the VM
  metadata_ms             with --metadata N: in one running container (a detached ctr run), the
                          wall time of an exec of each step, less that of an empty exec (p50):
                          create (N files of 1 byte in a new directory of the container's root,
                          the overlay), find (a walk stat-ing them), tar (tar of the directory
                          piped into tar x in a second one: an untar of N files), rm (rm -rf of
                          both); each step --runs times

A private containerd (root, state, socket) and a private CAPSEM_HOME; the image is the local OCI
archive of tests/e2e/ociimage.py; one warm-up of each (capsemd started, page cache filled) is not
counted; runs are interleaved. Results: bench/results/containerd-<UTC time>.json.
Options: --runs N (default 5); --transport auto|virtiofs|9p (default auto: what capsem-vm picks
on this host; capsemd's CAPSEM_WORKSPACE_TRANSPORT); --metadata N (default 0: none); --no-start
(only the metadata steps). Needs root, containerd, the built shim and the minimal image.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from ociimage import build_archive  # noqa: E402

from bench_vm import summary  # noqa: E402

BUILD = os.environ.get("CAPSEM_BUILD", os.path.join(ROOT, "build"))
IMAGES = os.environ.get("CAPSEM_IMAGES_DIR", os.path.join(
    os.environ.get("CAPSEM_HOME") or os.path.expanduser("~/.capsem"), "images"))
SHIM_DIR = os.path.join(BUILD, "src", "shim")
CAPSEM = os.path.join(BUILD, "src", "cli", "capsem")
CAPSEMD = os.path.join(BUILD, "src", "daemon", "capsemd")


def timed(cmd, env):
    """(ms to the first stdout byte, ms to exit); the command must print and exit 0."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = p.stdout.read(1)
    t1 = time.perf_counter()
    rest = p.stdout.read()
    err = p.stderr.read()
    rc = p.wait()
    t2 = time.perf_counter()
    if rc != 0 or (first + rest).strip() != b"ready":
        raise SystemExit(f"{cmd}: exit {rc}: {first + rest!r} {err.decode()}")
    return (t1 - t0) * 1000, (t2 - t0) * 1000


def metadata(sock, img, env, a):
    """The metadata steps in one detached container (see the module's docstring)."""
    ctr = lambda *args, **kw: subprocess.run(["ctr", "-a", sock, *args], capture_output=True,
                                             env=env, **kw)
    p = ctr("run", "-d", "--runtime", "io.containerd.capsem.v2", img, "meta", "sleep", "3600")
    if p.returncode != 0:
        raise SystemExit(f"ctr run -d: {p.stderr.decode()}")
    try:
        def ex(script):
            t0 = time.perf_counter()
            p = ctr("tasks", "exec", "--exec-id", "m", "meta", "sh", "-c", script)
            if p.returncode != 0:
                raise SystemExit(f"{script}: {p.stdout.decode()} {p.stderr.decode()}")
            return (time.perf_counter() - t0) * 1000, p.stdout
        vm = ex("echo $CAPSEM_VM_ID")[1].decode().strip()
        info = subprocess.run([CAPSEM, "info", vm, "--json"], capture_output=True, env=env)
        transport = json.loads(info.stdout).get("workspace_transport")
        n = a.metadata
        steps = {
            "create": f"mkdir /m && cd /m && seq {n} | busybox xargs touch",
            "find": "busybox find /m | wc -l",
            "tar": "mkdir /m2 && busybox tar cf - -C /m . | busybox tar xf - -C /m2",
            "rm": "rm -rf /m /m2",
        }
        out = {k: [] for k in steps}
        empty = []
        for _ in range(a.runs):
            empty.append(ex("true")[0])
            for k, script in steps.items():
                out[k].append(ex(script)[0])
        base = summary(empty)["p50"]
        res = {"empty_exec": summary(empty)}
        for k, v in out.items():
            res[k] = summary([max(0.0, x - base) for x in v])
        return res, transport
    finally:
        ctr("tasks", "kill", "-s", "SIGKILL", "meta")
        for _ in range(600):
            if b"RUNNING" not in ctr("tasks", "ls").stdout:
                break
            time.sleep(0.05)
        ctr("tasks", "delete", "meta")
        ctr("containers", "delete", "meta")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--transport", choices=("auto", "virtiofs", "9p"), default="auto")
    ap.add_argument("--metadata", type=int, default=0)
    ap.add_argument("--no-start", action="store_true")
    a = ap.parse_args()
    if not os.path.exists(os.path.join(SHIM_DIR, "containerd-shim-capsem-v2")):
        sys.exit("the shim is not built: make build")
    tmp = tempfile.mkdtemp(prefix="capsem-bench-ctd-")
    home = os.path.join(tmp, "home")
    os.makedirs(home)
    sock = os.path.join(tmp, "containerd.sock")
    cfg = os.path.join(tmp, "config.toml")
    with open(cfg, "w") as f:
        f.write(f'version = 2\nroot = "{tmp}/root"\nstate = "{tmp}/state"\n'
                f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                f'[grpc]\n  address = "{sock}"\n[ttrpc]\n  address = "{sock}.ttrpc"\n')
    env = dict(os.environ, PATH=SHIM_DIR + ":" + os.environ["PATH"], CAPSEM_HOME=home,
               CAPSEM_IMAGES_DIR=IMAGES, CAPSEM_IMAGE="minimal", CAPSEM_DAEMON_BIN=CAPSEMD,
               CAPSEM_SHIM_RUN=os.path.join(tmp, "shimrun"), CAPSEM_WORKSPACE_TRANSPORT=a.transport)
    log = open(os.path.join(tmp, "containerd.log"), "wb")
    ctd = subprocess.Popen(["containerd", "--config", cfg], stdout=log, stderr=subprocess.STDOUT,
                           env=env)
    res = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": a.runs,
           "accel": "tcg" if not os.access("/dev/kvm", os.W_OK) else "see capsem doctor",
           "transport_asked": a.transport}
    try:
        for _ in range(200):
            if subprocess.run(["ctr", "-a", sock, "version"], capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        img = build_archive(os.path.join(tmp, "image.tar"))
        subprocess.run(["ctr", "-a", sock, "images", "import", os.path.join(tmp, "image.tar")],
                       check=True, capture_output=True, env=env)
        cmds = {
            "shim": lambda i: ["ctr", "-a", sock, "run", "--rm", "--runtime",
                               "io.containerd.capsem.v2", img, f"b{i}", "echo", "ready"],
            "runc": lambda i: ["ctr", "-a", sock, "run", "--rm", "--runtime",
                               "io.containerd.runc.v2", img, f"r{i}", "echo", "ready"],
            "capsem_run": lambda i: [CAPSEM, "run", "--", "echo", "ready"],
        }
        data = {k: ([], []) for k in cmds}
        for k, c in cmds.items():  # warm-up
            if not a.no_start:
                timed(c("w"), env)
        for i in range(0 if a.no_start else a.runs):
            for k, c in cmds.items():
                fo, tot = timed(c(i), env)
                data[k][0].append(fo)
                data[k][1].append(tot)
        if not a.no_start:
            for k, (fo, tot) in data.items():
                res[f"{k}_first_output_ms"] = summary(fo)
                res[f"{k}_total_ms"] = summary(tot)
            p50 = lambda k: res[k]["p50"]
            res["ratio_shim_vs_runc_first_output"] = (p50("shim_first_output_ms") /
                                                      p50("runc_first_output_ms"))
            res["ratio_shim_vs_capsem_run_first_output"] = (p50("shim_first_output_ms") /
                                                            p50("capsem_run_first_output_ms"))
            res["ratio_shim_vs_capsem_run_total"] = p50("shim_total_ms") / p50("capsem_run_total_ms")
        if a.metadata:
            res["metadata_files"] = a.metadata
            res["metadata_ms"], res["workspace_transport"] = metadata(sock, img, env, a)
    finally:
        ctd.terminate()
        ctd.wait(60)
        log.close()
        try:
            pid = int(open(os.path.join(home, "run", "capsemd.pid")).read().split()[0])
            os.kill(pid, signal.SIGTERM)
            for _ in range(200):
                if not os.path.exists(f"/proc/{pid}"):
                    break
                time.sleep(0.05)
        except (OSError, ValueError, IndexError):
            pass
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    if tmp.encode() in open(f"/proc/{pid}/cmdline", "rb").read():
                        os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
        for line in reversed(open("/proc/self/mounts").read().splitlines()):
            if tmp in line:
                subprocess.run(["umount", "-l", line.split()[1]])
        shutil.rmtree(tmp, ignore_errors=True)

    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    out = os.path.join(ROOT, "bench", "results", "containerd-" + res["time"].replace(":", "") + ".json")
    with open(out, "w") as f:
        json.dump(res, f, indent=2)
    for k in ("shim", "runc", "capsem_run"):
        if k + "_total_ms" in res:
            print(f"{k:11s} first output p50 {res[k + '_first_output_ms']['p50']:8.1f} ms   "
                  f"total p50 {res[k + '_total_ms']['p50']:8.1f} ms")
    if "ratio_shim_vs_runc_first_output" in res:
        print(f"capsem shim / runc (first output)       {res['ratio_shim_vs_runc_first_output']:6.1f}x")
        print(f"capsem shim / capsem run (first output) {res['ratio_shim_vs_capsem_run_first_output']:6.2f}x")
        print(f"capsem shim / capsem run (total)        {res['ratio_shim_vs_capsem_run_total']:6.2f}x")
    if "metadata_ms" in res:
        print(f"metadata ({res['metadata_files']} files, pod directory over "
              f"{res['workspace_transport']}), p50 ms: " +
              ", ".join(f"{k} {v['p50']:.0f}" for k, v in res["metadata_ms"].items()))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
