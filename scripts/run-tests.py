#!/usr/bin/python3
"""run-tests.py - the whole test suite, as `make test` (and so CI) runs it.

Groups, in order: source style, unit + fuzz-corpus replay (normal build), the same under
ASan+UBSan, end-to-end tests with real microVMs (pytest). Every group runs even when an earlier
one failed; the last line is the total: "N passed, N failed[, N skipped]".
"""
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(ROOT)
JOBS = str(os.cpu_count() or 2)
totals = {"passed": 0, "failed": 0, "skipped": 0}
failures = []


def count(group, name, outcome):
    totals[outcome] += 1
    if outcome == "failed":
        failures.append(f"{group}: {name}")


def step(cmd, **kw):
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, **kw).returncode


def style():
    for check in ("format", "banned"):
        rc = step(["scripts/check-style.sh", check])
        count("style", check, "passed" if rc == 0 else "failed")


def meson_suite(builddir, group, setup_args=()):
    if not os.path.exists(os.path.join(builddir, "build.ninja")):
        if step(["meson", "setup", builddir, *setup_args]) != 0:
            count(group, "meson setup", "failed")
            return
    if step(["ninja", "-C", builddir, "-j" + JOBS]) != 0:
        count(group, "build", "failed")
        return
    log = os.path.join(builddir, "meson-logs", "testlog.json")
    if os.path.exists(log):
        os.unlink(log)
    step(["meson", "test", "-C", builddir, "--print-errorlogs", "--no-rebuild"],
         env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1", UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"))
    if not os.path.exists(log):
        count(group, "meson test", "failed")
        return
    with open(log) as f:
        for line in f:
            t = json.loads(line)
            res = t.get("result")
            outcome = "passed" if res in ("OK", "EXPECTEDFAIL") else "skipped" if res == "SKIP" else "failed"
            count(group, t.get("name"), outcome)


def e2e():
    images = os.environ.get("CAPSEM_IMAGES_DIR") or os.path.join(
        os.environ.get("CAPSEM_HOME") or os.path.expanduser("~/.capsem"), "images")
    env = dict(os.environ,
               CAPSEM_BUILD=os.path.join(ROOT, "build"),
               CAPSEM_GUEST_BUILD=os.path.join(ROOT, "build-guest"),
               CAPSEM_IMAGES_DIR=images,
               CAPSEM_AGENT_HOST_BIN=os.path.join(ROOT, "build", "src", "guest", "capsem-agent-host"))
    xml = os.path.join(ROOT, "build", "e2e-junit.xml")
    if os.path.exists(xml):
        os.unlink(xml)
    rc = step(["/usr/bin/python3", "-m", "pytest", "-v", "-rs", "tests/e2e", "--junitxml", xml], env=env)
    if not os.path.exists(xml):
        count("e2e", "pytest", "failed")
        return
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = case.get("classname", "") + "::" + case.get("name", "")
        if case.find("failure") is not None or case.find("error") is not None:
            count("e2e", name, "failed")
        elif case.find("skipped") is not None:
            count("e2e", name, "skipped")
        else:
            count("e2e", name, "passed")
    if rc not in (0, 1):
        count("e2e", f"pytest exit {rc}", "failed")


style()
meson_suite("build", "unit")
meson_suite("build-asan", "asan", ["-Db_sanitize=address,undefined", "-Db_lundef=false", "-Dbuildtype=debug"])
e2e()

if failures:
    print("\nFailed:")
    for f in failures:
        print("  " + f)
line = f"{totals['passed']} passed, {totals['failed']} failed"
if totals["skipped"]:
    line += f", {totals['skipped']} skipped"
print(line)
sys.exit(1 if totals["failed"] else 0)
