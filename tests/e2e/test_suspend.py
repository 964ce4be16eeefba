"""Suspend and resume (issue "fork/suspend"), at capsem-vm's level: a VM on the serial channel is
saved to a file ({"cmd":"suspend"}), its QEMU and supervisor end, and a new capsem-vm started with
--incoming FILE brings it back: a process that counted in the background counts on from where it
was (not restarted), a file in the guest's RAM is still there, exec works at once, the guest's
wall clock is set again. A VM that cannot be saved (a live workspace share) says why and runs on.
Timings (TCG here): suspend, and resume to first exec against a cold boot to first exec.
"""
import json
import os
import socket
import subprocess
import time

import pytest

from conftest import VM, need_image, procs_mentioning, wait_for

MEM = "256M"


def command(vmdir, cmd):
    s = socket.socket(socket.AF_UNIX)
    s.connect(os.path.join(str(vmdir), "control.sock"))
    s.sendall(json.dumps(cmd).encode() + b"\n")
    return s


def events(vm, until, timeout=120):
    """capsem-vm's events on stdout up to (and with) the first whose "event" is in until."""
    out = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = vm.proc.stdout.readline()
        if not line:
            break
        ev = json.loads(line)
        out.append(ev)
        if ev.get("event") in until:
            break
    return out


def counter(vm):
    """The background counter's value (-1 before its first write)."""
    r = vm.sh("cat /tmp/count 2>/dev/null")
    return int(r.stdout) if r.code == 0 else -1


def test_suspend_and_resume(tmp_path_factory):
    need_image()
    d = tmp_path_factory.mktemp("suspend")
    vmdir = d / "vm"
    args = ["--channel", "serial", "--memory", MEM, "--control", "control.sock"]
    t = time.monotonic()
    v = VM(vmdir, *args)
    cold = time.monotonic() - t
    try:
        r = v.sh("head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /tmp/marker; "
                 "cat /tmp/marker; "
                 "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/c.n; mv /tmp/c.n /tmp/count; "
                 "sleep 0.1; done' </dev/null >/dev/null 2>&1 &")
        assert r.code == 0, r
        marker = r.stdout
        wait_for(lambda: counter(v) > 5, 30, "the counter")
        before = counter(v)
        t = time.monotonic()
        c = command(vmdir, {"cmd": "suspend"})
        evs = events(v, {"stopped", "error"})
        took_suspend = time.monotonic() - t
        c.close()
        kinds = [e["event"] for e in evs]
        assert "suspended" in kinds, evs
        assert evs[-1]["event"] == "stopped" and evs[-1]["reason"] == "suspended", evs
        assert v.proc.wait(30) == 0
        v.ready = None
    except BaseException:
        v.stop()
        raise
    state = vmdir / "suspend.state"
    assert state.exists() and os.stat(state).st_mode & 0o777 == 0o600
    info = json.loads((vmdir / "suspend.json").read_text())
    assert info["bytes"] == os.path.getsize(state) and info["memory_mib"] == 256
    assert not procs_mentioning(str(vmdir) + " "), "QEMU is still running after the suspend"

    time.sleep(2)  # the wall clock moves on while the VM is saved
    t = time.monotonic()
    w = VM(vmdir, *args, "--incoming", str(state))
    r = w.sh("true")
    resume = time.monotonic() - t
    try:
        assert r.code == 0
        assert w.ready["resumed"] is True and w.ready["restore_ms"] > 0, w.ready
        assert not state.exists(), "the used state must be removed"
        after = counter(w)
        assert before <= after < before + 40, (before, after)  # counts on, not restarted
        wait_for(lambda: counter(w) > after, 10, "the counter to go on after the resume")
        r = w.sh("cat /tmp/marker; echo; date +%s")
        lines = r.stdout.split()
        assert lines[0] == marker, "the guest's RAM did not come back"
        assert abs(int(lines[1]) - time.time()) < 3, "the guest clock was not set on resume"
        # a second suspend/resume cycle of the resumed VM
        c = command(vmdir, {"cmd": "suspend"})
        evs = events(w, {"stopped", "error"})
        c.close()
        assert evs[-1].get("reason") == "suspended", evs
        assert w.proc.wait(30) == 0
        w.ready = None
        x = VM(vmdir, *args, "--incoming", str(state))
        try:
            assert counter(x) >= after
        finally:
            assert x.stop() == 0
    finally:
        if w.ready:
            w.stop()
    print(f"\nsuspend {took_suspend:.2f} s ({info['bytes'] >> 20} MiB of state, TCG); "
          f"resume to first exec {resume:.2f} s vs cold boot to ready {cold:.2f} s: "
          f"{resume / cold:.2f}x")


def test_a_vm_with_a_live_share_says_why_and_runs_on(tmp_path_factory):
    need_image()
    d = tmp_path_factory.mktemp("nosuspend")
    ws = d / "ws"
    ws.mkdir()
    v = VM(d / "vm", "--channel", "serial", "--memory", MEM, "--control", "control.sock",
           "--workspace", str(ws))
    try:
        c = command(d / "vm", {"cmd": "suspend"})
        evs = events(v, {"suspend_failed", "stopped"})
        c.close()
        assert evs[-1]["event"] == "suspend_failed", evs
        assert "workspace" in evs[-1]["message"] and "QEMU 7.2" in evs[-1]["message"]
        assert v.sh("echo still").stdout == b"still\n"
    finally:
        assert v.stop() == 0
