#!/usr/bin/python3
"""run-tests.py - the whole test suite, as `make test` (and so CI) runs it.

Groups, in order: source style, clang-tidy (scripts/tidy.py: zero findings over src/, through the
normal build's compile database), the containerd shim's gofmt/vet/go test (scripts/build-shim.sh), unit + fuzz-corpus replay (normal build), the same under
ASan+UBSan, the threaded parts under TSan, end-to-end tests with real microVMs (pytest), and, when run as root, the VM
lifecycle modules again as an unprivileged user (USER_MODULES). With --check (make check): the
first four groups only: no images, no VMs, a few minutes. Every group runs even when an earlier
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


def tidy():
    # needs build/compile_commands.json and the depfiles of a finished build (make check builds
    # the host first); unchanged files that passed before are skipped
    if not os.path.exists(os.path.join("build", "build.ninja")):
        if step(["meson", "setup", "build"]) != 0 or step(["ninja", "-C", "build", "-j" + JOBS]) != 0:
            count("style", "tidy", "failed")
            return
    rc = step([sys.executable, "scripts/tidy.py"])
    count("style", "tidy", "passed" if rc == 0 else "failed")


def shim():
    # the containerd shim (Go, src/shim): gofmt, go vet, go test; skipped without Go
    import shutil
    if not shutil.which("go"):
        count("shim", "go test (Go is not installed)", "skipped")
        return
    rc = step(["scripts/build-shim.sh", "build", "--test"])
    count("shim", "go vet + go test", "passed" if rc == 0 else "failed")


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


# e2e modules also run as an unprivileged user when the suite runs as root (CI does): a normal
# user's PATH has no /usr/sbin, its home is not /root, it cannot read root's files. Every other
# module needs nothing a normal user lacks either, but is left to the root run to keep CI's time:
#   test_debian_image, test_egress, test_guest_egress, test_mcp_gateway (the Debian image: 700
#   MiB more to copy, 10+ minutes more under TCG), test_images_cli and test_image_config (they
#   build images with mmdebstrap, which needs root or user namespaces), test_proxy_host,
#   test_policy_cli, test_capsem_mcp, test_agent_unix (no VM lifecycle), test_webgw (runs a
#   request as capsem-ci with runuser: needs root) and test_webui (chromium and ui/node_modules,
#   which `make build` installs in the source tree).
USER_MODULES = ["test_run_cli.py", "test_cli_daemon.py", "test_exec.py", "test_ledger.py",
                "test_vm_supervisor.py", "test_shell_tmux.py", "test_workspace.py",
                "test_snapshots.py", "test_confinement.py", "test_suspend.py"]
USER = "capsem-ci"


def e2e_unprivileged():
    if os.geteuid() != 0:
        return  # the main run already was unprivileged
    images = os.environ.get("CAPSEM_IMAGES_DIR") or os.path.join(
        os.environ.get("CAPSEM_HOME") or os.path.expanduser("~/.capsem"), "images")
    if subprocess.run(["id", "-u", USER], capture_output=True).returncode != 0 and \
            step(["useradd", "--create-home", "--shell", "/bin/sh", USER]) != 0:
        count("e2e-user", "useradd " + USER, "failed")
        return
    # the user must reach the checkout (a clone under `mktemp -d` sits in a 0700 directory):
    # let others traverse (o+x, not list) each ancestor that does not allow it
    d = ROOT
    while d != "/":
        st = os.stat(d)
        if not st.st_mode & 0o001:
            print(f"+ chmod o+x {d} (so that {USER} can reach the checkout)", flush=True)
            os.chmod(d, st.st_mode | 0o001)
        d = os.path.dirname(d)
    home = os.path.expanduser("~" + USER)
    # the minimal image, copied where the user can read it (root's home is 0700)
    uimages = os.path.join(home, "images")
    subprocess.run(["rm", "-rf", uimages])
    os.makedirs(uimages)
    if step(["cp", "-a", os.path.join(images, "minimal"), os.path.join(uimages, "minimal")]) != 0 \
            or step(["chown", "-R", f"{USER}:{USER}", uimages]) != 0:
        count("e2e-user", "copy the minimal image", "failed")
        return
    xml = os.path.join("/tmp", f"capsem-e2e-{USER}.xml")
    if os.path.exists(xml):
        os.unlink(xml)
    env = {"HOME": home, "USER": USER, "LOGNAME": USER, "LANG": "C.UTF-8",
           "PATH": "/usr/local/bin:/usr/bin:/bin",  # a normal user's: no sbin
           "CAPSEM_BUILD": os.path.join(ROOT, "build"),
           "CAPSEM_GUEST_BUILD": os.path.join(ROOT, "build-guest"),
           "CAPSEM_IMAGES_DIR": uimages,
           "CAPSEM_AGENT_HOST_BIN": os.path.join(ROOT, "build", "src", "guest", "capsem-agent-host")}
    rc = step(["runuser", "-u", USER, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()],
               "/usr/bin/python3", "-m", "pytest", "-v", "-rs", "-p", "no:cacheprovider",
               *[os.path.join("tests", "e2e", m) for m in USER_MODULES], "--junitxml", xml])
    if not os.path.exists(xml):
        count("e2e-user", "pytest", "failed")
        return
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = case.get("classname", "") + "::" + case.get("name", "") + " (as " + USER + ")"
        if case.find("failure") is not None or case.find("error") is not None:
            count("e2e-user", name, "failed")
        elif case.find("skipped") is not None:
            count("e2e-user", name, "skipped")
        else:
            count("e2e-user", name, "passed")
    if rc not in (0, 1):
        count("e2e-user", f"pytest exit {rc}", "failed")


# the threaded parts under ThreadSanitizer: the ledger's writer thread, capsem-mcp's worker
# threads, the gateway's libuv jobs and libcurl workers
TSAN_TESTS = ["ledger", "mcp-tools", "gateway", "gateway-httpmcp", "gateway-builtin",
              "workspace-snapstore"]


def tsan_suite():
    builddir = "build-tsan"
    if not os.path.exists(os.path.join(builddir, "build.ninja")):
        if step(["meson", "setup", builddir, "-Db_sanitize=thread", "-Db_lundef=false",
                 "-Dbuildtype=debug"]) != 0:
            count("tsan", "meson setup", "failed")
            return
    targets = ["tests/unit/test-" + t for t in TSAN_TESTS]
    if step(["ninja", "-C", builddir, "-j" + JOBS, *targets]) != 0:
        count("tsan", "build", "failed")
        return
    log = os.path.join(builddir, "meson-logs", "testlog.json")
    if os.path.exists(log):
        os.unlink(log)
    step(["meson", "test", "-C", builddir, "--print-errorlogs", "--no-rebuild", *TSAN_TESTS],
         env=dict(os.environ, TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1"))
    if not os.path.exists(log):
        count("tsan", "meson test", "failed")
        return
    with open(log) as f:
        for line in f:
            t = json.loads(line)
            count("tsan", t.get("name"), "passed" if t.get("result") == "OK" else "failed")


check_only = "--check" in sys.argv[1:]
style()
tidy()
shim()
meson_suite("build", "unit")
meson_suite("build-asan", "asan", ["-Db_sanitize=address,undefined", "-Db_lundef=false", "-Dbuildtype=debug"])
tsan_suite()
if not check_only:
    e2e()
    e2e_unprivileged()

if failures:
    print("\nFailed:")
    for f in failures:
        print("  " + f)
line = f"{totals['passed']} passed, {totals['failed']} failed"
if totals["skipped"]:
    line += f", {totals['skipped']} skipped"
print(line)
sys.exit(1 if totals["failed"] else 0)
