"""Shared fixtures for the end-to-end tests: real binaries, real QEMU microVMs (TCG here).

Paths come from the environment that scripts/run-tests.py sets (CAPSEM_BUILD, CAPSEM_IMAGES_DIR),
with defaults for a plain `pytest tests/e2e` from the source tree. Each test gets its own
CAPSEM_HOME so leftovers (VM directories, processes) can be checked exactly.
"""
import json
import os
import signal
import subprocess
import time

import pytest

import capsem_client as cc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("CAPSEM_BUILD", os.path.join(ROOT, "build"))
IMAGES = os.environ.get("CAPSEM_IMAGES_DIR", os.path.expanduser("~/.capsem/images"))
CAPSEM = os.path.join(BUILD, "src", "cli", "capsem")
CAPSEM_VM = os.path.join(BUILD, "src", "vm", "capsem-vm")
IMAGE = os.path.join(IMAGES, "minimal")
# VMs that name no image get the full Debian image once it is installed: the tests pin the
# minimal one (the CLI and capsemd both read CAPSEM_IMAGE); Debian tests ask for it by name
os.environ.setdefault("CAPSEM_IMAGE", "minimal")

# Processes the tests start without a CAPSEM_HOME of their own (capsem-vm started directly) keep
# their state (the egress CA, policy) in a throw-away home, never in the user's ~/.capsem.
if "CAPSEM_HOME" not in os.environ:
    import atexit
    import shutil
    import tempfile
    os.environ["CAPSEM_HOME"] = tempfile.mkdtemp(prefix="capsem-test-home-")
    atexit.register(shutil.rmtree, os.environ["CAPSEM_HOME"], True)


def need_image():
    if not os.path.exists(os.path.join(IMAGE, "vmlinux")):
        pytest.fail(f"the minimal image is missing at {IMAGE}: run `make image` first")


@pytest.fixture
def home(tmp_path):
    """A private CAPSEM_HOME; afterwards no VM directory and no process may remain."""
    need_image()
    h = tmp_path / "capsem-home"
    h.mkdir()
    yield h
    stop_daemon(h)
    leftovers = procs_mentioning(str(h))
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    vms = h / "vms"
    left_dirs = list(vms.iterdir()) if vms.exists() else []
    assert not leftovers, f"processes left behind: {leftovers}"
    assert not left_dirs, f"VM directories left behind: {left_dirs}"


def stop_daemon(home, timeout=30):
    """Stop a capsemd that a test started under this CAPSEM_HOME (its pid file names it)."""
    pidfile = os.path.join(str(home), "run", "capsemd.pid")
    try:
        pid = int(open(pidfile).read().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    def gone():
        try:
            os.kill(pid, 0)
            return False
        except ProcessLookupError:
            return True
    try:
        wait_for(gone, timeout, "capsemd to exit")
    except AssertionError:
        os.kill(pid, signal.SIGKILL)


def procs_mentioning(text):
    """PIDs of processes whose command line contains text (other than ourselves)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if text.encode() in cmd:
            pids.append(int(d))
    return pids


def capsem_env(home):
    return dict(os.environ, CAPSEM_HOME=str(home), CAPSEM_IMAGES_DIR=IMAGES)


def capsem(home, *args, input=b"", timeout=180):
    """Run the capsem CLI; returns CompletedProcess with bytes stdout/stderr."""
    return subprocess.run([CAPSEM, *args], input=input, capture_output=True,
                          env=capsem_env(home), timeout=timeout)


def stop_process(proc, timeout=60):
    """SIGTERM, then SIGKILL after timeout s; the exit status (a supervisor's clean stop is 0)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class VM:
    """A capsem-vm supervisor started directly (the path `capsem run` uses), for module reuse:
    an image directory's kernel, initrd and (when it has one) root file system; a private
    CAPSEM_HOME (next to the VM directory unless given: the egress CA and policy live there);
    env: the supervisor's environment (default ours); ledger: --ledger PATH."""

    def __init__(self, vmdir, *extra, image=None, home=None, env=None, ledger=None):
        image = image or IMAGE
        self.vmdir = vmdir
        self.ledger = ledger
        self.home = home or os.path.join(os.path.dirname(str(vmdir)), "capsem-home")
        os.makedirs(self.home, exist_ok=True)
        m = json.load(open(os.path.join(image, "manifest.json")))
        args = [CAPSEM_VM, "--vmdir", str(vmdir), "--kernel", os.path.join(image, "vmlinux"),
                "--initrd", os.path.join(image, "initrd.img")]
        if "rootfs" in m:
            args += ["--rootfs", os.path.join(image, m["rootfs"]["file"])]
        if ledger:
            args += ["--ledger", str(ledger)]
        self.proc = subprocess.Popen(
            args + list(extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(os.environ if env is None else env, CAPSEM_HOME=str(self.home)))
        self.ready = None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("capsem-vm exited: " + self.proc.stderr.read().decode())
        ev = json.loads(line)
        if ev.get("event") != "ready":
            self.stop()
            raise RuntimeError(f"VM did not become ready: {ev}")
        self.ready = ev
        self.vsock = ev["vsock"]

    def sh(self, script, timeout=None, **kw):
        """A shell script in the guest (capsem_client.sh); timeout: its I/O timeout, seconds."""
        if timeout is not None:
            kw["io_timeout"] = timeout
        return cc.sh(self.vsock, script, **kw)

    def stages(self):
        return {s["name"]: s["usec"] for s in self.ready["stages"]}

    def stop(self):
        return stop_process(self.proc)


@pytest.fixture(scope="module")
def vm(tmp_path_factory):
    need_image()
    d = tmp_path_factory.mktemp("vm")
    v = VM(d / "vm", "--cpus", "2", "--memory", "768M")
    yield v
    assert v.stop() == 0
    assert not procs_mentioning(str(d)), "QEMU or capsem-vm left behind"


def wait_for(pred, timeout, what):
    """pred()'s first true value, asked every 50 ms for at most timeout s (AssertionError
    naming what after that). The one place the e2e tests sleep to wait for a state."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
