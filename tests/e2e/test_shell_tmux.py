"""`capsem shell` on a real terminal: driven inside a private tmux server (send-keys, capture-pane).

Checks the interactive path end to end: raw mode (keys reach the guest's pty), window resizes
(SIGWINCH -> WINSIZE), Ctrl-C interrupting a guest command, the shell's exit status returned, and
the ephemeral VM deleted afterwards."""
import json
import os
import re
import shlex
import subprocess
import time

import pytest

from conftest import CAPSEM, IMAGES, wait_for
from test_cli_daemon import cli, dhome  # noqa: F401  (module-scoped private CAPSEM_HOME)


class Tmux:
    def __init__(self, name):
        self.name = name

    def run(self, *args, check=True):
        return subprocess.run(["tmux", "-L", self.name, *args], capture_output=True,
                              check=check, timeout=30)

    def screen(self):
        return self.run("capture-pane", "-p", "-t", "t").stdout.decode(errors="replace")

    def keys(self, *keys):
        self.run("send-keys", "-t", "t", *keys)

    def wait(self, pattern, timeout=60):
        try:
            return wait_for(lambda: (lambda s: s if re.search(pattern, s, re.M) else None)(
                self.screen()), timeout, repr(pattern))
        except AssertionError:
            raise AssertionError(f"timed out waiting for {pattern!r}; screen:\n{self.screen()}")


# a guest process named sleep (the exec's own sh and cat are not)
SLEEPING = ('for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = sleep ] && exit 0; '
            'done; exit 1')


def wait_sleeping(dhome, ref):  # noqa: F811
    """Wait until `sleep` runs in the VM: a key sent now reaches it, not the shell before it."""
    wait_for(lambda: cli(dhome, "exec", ref, "--", "sh", "-c", SLEEPING).returncode == 0, 30,
             "sleep to run in the guest")


def start_tmux(dhome, *shell_args):  # noqa: F811
    t = Tmux(f"capsem-test-{os.getpid()}")
    env = f"CAPSEM_HOME={shlex.quote(str(dhome))} CAPSEM_IMAGES_DIR={shlex.quote(IMAGES)}"
    args = " ".join(shlex.quote(a) for a in shell_args)
    cmd = f"env {env} {shlex.quote(CAPSEM)} shell {args}; echo rc=$?; sleep 600"
    t.run("-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", "120", "-y", "40", cmd)
    return t


@pytest.fixture
def tmux(dhome):  # noqa: F811
    t = start_tmux(dhome)
    yield t
    t.run("kill-server", check=False)


def test_shell_in_tmux(dhome, tmux):  # noqa: F811
    tmux.wait(r"[#$] ?$", timeout=90)  # the guest's prompt

    tmux.keys("echo $((6*7))", "Enter")
    tmux.wait(r"^42\s*$")

    tmux.keys("stty size", "Enter")
    tmux.wait(r"^40 120\s*$")
    tmux.run("resize-window", "-t", "t", "-x", "100", "-y", "30")

    def resized():  # SIGWINCH -> WINSIZE reaches the guest's pty after a moment
        tmux.keys("clear; stty size", "Enter")
        try:
            return tmux.wait(r"^30 100\s*$", timeout=2)
        except AssertionError:
            return None
    wait_for(resized, 30, "the guest's pty to take the new size")

    # Ctrl-C is a byte for the guest's pty: it interrupts sleep, not capsem
    tmux.keys("clear; sleep 100", "Enter")
    vid = json.loads(cli(dhome, "list", "-a", "--json", check=0).stdout)[0]["id"]
    wait_sleeping(dhome, vid)
    t0 = time.monotonic()
    tmux.keys("C-c")
    tmux.keys("echo after-$((1+1))", "Enter")
    tmux.wait(r"^after-2\s*$", timeout=20)
    assert time.monotonic() - t0 < 20

    tmux.keys("exit 3", "Enter")
    tmux.wait(r"^rc=3\s*$", timeout=60)

    # the ephemeral VM is gone
    vms = json.loads(cli(dhome, "list", "-a", "--json", check=0).stdout)
    assert vms == [], vms


def test_shell_in_named_vm_ctrl_z_and_ctrl_d(dhome):  # noqa: F811
    cli(dhome, "create", "-n", "shelly", "--memory", "256M", check=0)
    t = start_tmux(dhome, "shelly")
    try:
        t.wait(r"[#$] ?$", timeout=90)
        t.keys("echo inside-$(hostname)-ok > /root/mark; cat /root/mark", "Enter")
        t.wait(r"^inside-.*-ok\s*$")
        # Ctrl-Z reaches the guest's pty: the guest shell stops its job
        t.keys("sleep 100", "Enter")
        wait_sleeping(dhome, "shelly")
        t.keys("C-z")
        t.wait(r"Stopped", timeout=20)
        t.keys("kill -9 %1; echo killed-$((2+3))", "Enter")
        t.wait(r"^killed-5\s*$", timeout=20)
        # reap it before Ctrl-D: until the shell has seen the job die it still counts it as
        # stopped, and ash answers the first Ctrl-D with "You have stopped jobs."
        t.keys("wait; echo reaped-$((1+1))", "Enter")
        t.wait(r"^reaped-2\s*$", timeout=20)
        # Ctrl-D at the prompt ends the guest shell: status 0 comes back
        t.keys("C-d")
        t.wait(r"^rc=0\s*$", timeout=60)
    finally:
        t.run("kill-server", check=False)
    # the named VM outlives its shell, with the file written in it
    vm = json.loads(cli(dhome, "info", "shelly", "--json", check=0).stdout)
    assert vm["state"] == "running"
    assert cli(dhome, "exec", "shelly", "--", "cat", "/root/mark", check=0).stdout.startswith(b"inside-")
    cli(dhome, "delete", "shelly", check=0)
