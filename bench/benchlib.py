"""benchlib.py - what the benchmarks share: where the build and images are, which accelerator
runs the VMs, and how a result is printed and kept (bench/results/<kind>-<UTC time>.json)."""
import json
import os
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("CAPSEM_BUILD", os.path.join(ROOT, "build"))
IMAGES = os.environ.get("CAPSEM_IMAGES_DIR", os.path.join(
    os.environ.get("CAPSEM_HOME") or os.path.expanduser("~/.capsem"), "images"))
CAPSEM = os.path.join(BUILD, "src", "cli", "capsem")


def accel():
    """'tcg' when the CPU shows no vmx/svm flag (VMs are emulated: say so when quoting)."""
    flags = open("/proc/cpuinfo").read()
    return "kvm?" if "vmx" in flags or "svm" in flags else "tcg"


def save(kind, r, width=22):
    """Print the results, one per line, and write them as JSON; returns the file's path."""
    for k, v in r.items():
        if isinstance(v, float):
            print(f"{k:{width}} {v:.3f}")
        elif isinstance(v, (dict, list)):
            print(f"{k:{width}} {json.dumps(v)}")
        else:
            print(f"{k:{width}} {v}")
    out = os.path.join(ROOT, "bench", "results",
                       time.strftime(f"{kind}-%Y%m%dT%H%M%SZ.json", time.gmtime()))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(r, f, indent=2)
    print(f"results: {out}")
    return out
