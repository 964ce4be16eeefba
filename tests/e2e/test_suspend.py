"""Suspend and resume (issue "fork/suspend"), at capsem-vm's level: a VM on the serial channel is
saved to a file ({"cmd":"suspend"}), its QEMU and supervisor end, and a new capsem-vm started with
--incoming FILE brings it back: a process that counted in the background counts on from where it
was (not restarted), a file in the guest's RAM is still there, exec works at once, the guest's
wall clock is set again. A live workspace over capsem-vm's own 9p server (the port "capsem.ws")
is saved with the VM: a process writing to an open file in it writes on after the resume, and the
host sees it. A VM that cannot be saved (a virtio-fs workspace) says why and runs on.
Timings (TCG here): suspend, and resume to first exec against a cold boot to first exec.
"""
import json
import signal
import os
import socket
import subprocess
import time

import pytest

from conftest import CAPSEM, IMAGES, VM, need_image, procs_mentioning, wait_for

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


def test_a_live_workspace_is_saved_with_the_vm(tmp_path_factory):
    need_image()
    d = tmp_path_factory.mktemp("wsuspend")
    ws = d / "ws"
    ws.mkdir()
    (ws / "host.txt").write_text("from the host\n")
    args = ["--channel", "serial", "--memory", MEM, "--control", "control.sock",
            "--workspace", str(ws)]
    v = VM(d / "vm", *args)
    w = None
    try:
        r = v.sh("grep ' /root/workspace ' /proc/mounts; cat /root/workspace/host.txt")
        assert b" 9p " in r.stdout and b"trans=fd" in r.stdout, r
        assert r.stdout.endswith(b"from the host\n"), r
        # a process keeps a file of the workspace open (and its cwd there) across the save
        v.sh("cd /root/workspace && setsid sh -c 'exec 3>>log; i=0; while :; do "
             "i=$((i+1)); echo $i >&3; sleep 0.1; done' </dev/null >/dev/null 2>&1 &")
        def lines():
            return len((ws / "log").read_text().split()) if (ws / "log").exists() else 0
        wait_for(lambda: lines() > 5, 30, "the writer")
        c = command(d / "vm", {"cmd": "suspend"})
        evs = events(v, {"suspend_failed", "stopped"})
        c.close()
        assert [e["event"] for e in evs][-2:] == ["suspended", "stopped"], evs
        assert v.proc.wait(timeout=60) == 0
        at_save = lines()
        assert (d / "vm" / "ws9p.state").exists()
        time.sleep(1)
        assert lines() == at_save, "the guest wrote while suspended"
        (ws / "while-away.txt").write_text("written while suspended\n")
        w = VM(d / "vm", *args, "--incoming", str(d / "vm" / "suspend.state"))
        wait_for(lambda: lines() > at_save + 5, 30, "the writer to go on after the resume")
        nums = [int(x) for x in (ws / "log").read_text().split()]
        assert nums == list(range(1, len(nums) + 1)), "lines lost or repeated across the save"
        r = w.sh("cat /root/workspace/while-away.txt; echo after > /root/workspace/after.txt")
        assert r.stdout == b"written while suspended\n", r
        assert (ws / "after.txt").read_text() == "after\n"
        assert not (d / "vm" / "ws9p.state").exists(), "the used state is removed"
    finally:
        if w and w.ready:
            assert w.stop() == 0
        elif v.ready and v.proc.poll() is None:
            v.stop()


def test_a_vm_on_vsock_with_virtiofs_says_why_and_runs_on(tmp_path_factory):
    need_image()
    if os.geteuid() != 0:
        pytest.skip("virtiofsd needs root: a normal user's workspace is QEMU's 9p, which "
                    "blocks a save the same way (covered as root)")
    d = tmp_path_factory.mktemp("nosuspend")
    ws = d / "ws"
    ws.mkdir()
    v = VM(d / "vm", "--memory", MEM, "--control", "control.sock", "--workspace", str(ws),
           env=dict(os.environ, CAPSEM_WORKSPACE_TRANSPORT="virtiofs"))
    try:
        c = command(d / "vm", {"cmd": "suspend"})
        evs = events(v, {"suspend_failed", "stopped"})
        c.close()
        assert evs[-1]["event"] == "suspend_failed", evs
        assert "vsock" in evs[-1]["message"] and "QEMU 7.2" in evs[-1]["message"], evs
        assert v.sh("echo still").stdout == b"still\n"
    finally:
        assert v.stop() == 0


# ---- through capsemd: capsem create --suspendable, suspend, list, restart of capsemd, resume ----

def test_suspend_and_resume_through_capsemd(tmp_path_factory):
    from test_cli_daemon import cli, clean_home, stop_daemon
    need_image()
    d = tmp_path_factory.mktemp("dsuspend")
    h = d / "home"
    h.mkdir()
    try:
        # a VM created --no-suspendable (virtio-fs, vsock) says why it cannot be suspended
        cli(h, "create", "-n", "plain", "--no-suspendable", "--memory", MEM, check=0)
        info = json.loads(cli(h, "info", "plain", "--json", check=0).stdout)
        assert info["can_suspend"] is False and "--no-suspendable" in info["suspend_blocker"]
        p = cli(h, "suspend", "plain")
        assert p.returncode != 0 and b"--no-suspendable" in p.stderr, p
        # an ephemeral VM has the same devices, but is deleted when it stops: persist it first
        eph = json.loads(cli(h, "create", "--memory", MEM, "--json", check=0).stdout)
        assert eph["can_suspend"] is False and "persist" in eph["suspend_blocker"], eph
        cli(h, "delete", eph["id"], check=0)
        cli(h, "delete", "plain", check=0)

        # a default named VM can be: its workspace is shared live all the same
        cli(h, "create", "-n", "s", "--memory", MEM, check=0)
        info = json.loads(cli(h, "info", "s", "--json", check=0).stdout)
        assert info["can_suspend"] is True and info["workspace"], info
        ws = info["workspace"]
        session = info["session"]
        cli(h, "exec", "s", "--", "sh", "-c", "echo before > /root/workspace/b.txt", check=0)
        cli(h, "exec", "s", "--", "sh", "-c",
            "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/c.n; "
            "mv /tmp/c.n /tmp/count; sleep 0.1; done' </dev/null >/dev/null 2>&1 &", check=0)

        def count():
            p = cli(h, "exec", "s", "--", "cat", "/tmp/count")
            return int(p.stdout) if p.returncode == 0 and p.stdout.strip() else -1
        wait_for(lambda: count() > 5, 30, "the counter")
        # an open session gets a clear message when the VM is suspended under it
        held = subprocess.Popen([CAPSEM, "exec", "s", "--", "sleep", "600"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=dict(os.environ, CAPSEM_HOME=str(h)))
        time.sleep(1)
        before = count()
        t = time.monotonic()
        cli(h, "suspend", "s", check=0)
        took = time.monotonic() - t
        _, err = held.communicate(timeout=60)
        assert held.returncode != 0 and b"suspended" in err, err
        vms = {v["name"]: v for v in json.loads(cli(h, "list", "-a", "--json", check=0).stdout)}
        assert vms["s"]["state"] == "suspended", vms["s"]
        vmdir = vms["s"]["vmdir"]
        assert os.path.exists(os.path.join(vmdir, "suspend.state"))
        assert not procs_mentioning(vmdir + "/"), "QEMU or capsem-vm still run when suspended"
        p = cli(h, "exec", "s", "--", "true")
        assert p.returncode != 0 and b"suspended" in p.stderr, p

        # capsemd dies hard and comes back: the VM is still suspended, and resumes
        pid = int((h / "run" / "capsemd.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or
                 open(f"/proc/{pid}/stat").read().split()[2] == "Z", 30, "capsemd to die")
        vms = {v["name"]: v for v in json.loads(cli(h, "list", "-a", "--json", check=0).stdout)}
        assert vms["s"]["state"] == "suspended", vms["s"]
        t = time.monotonic()
        cli(h, "resume", "s", check=0)
        after = count()
        resume = time.monotonic() - t
        assert before <= after < before + 60, (before, after)
        wait_for(lambda: count() > after, 10, "the counter to go on")
        info = json.loads(cli(h, "info", "s", "--json", check=0).stdout)
        assert info["state"] == "running" and info["session"] == session, info
        ev = cli(h, "events", "s", "--kind", "exec", "--json", check=0).stdout
        assert b"/tmp/count" in ev  # execs before and after the suspend, one session
        # the workspace: the guest's file from before, the host's from while it was away
        with open(os.path.join(ws, "h.txt"), "w") as f:
            f.write("host\n")
        p = cli(h, "exec", "s", "--", "sh", "-c", "cat b.txt h.txt; echo after > a.txt", check=0)
        assert p.stdout == b"before\nhost\n", p
        assert open(os.path.join(ws, "a.txt")).read() == "after\n"
        # the file audit goes on across the save
        wait_for(lambda: b"a.txt" in cli(h, "events", "s", "--kind", "fs", "--json").stdout,
                 30, "the audit's row for a file made after the resume")

        # stop on a suspended VM discards its state; start boots it cold
        cli(h, "suspend", "s", check=0)
        cli(h, "stop", "s", check=0)
        assert not os.path.exists(os.path.join(vmdir, "suspend.state"))
        t = time.monotonic()
        cli(h, "start", "s", check=0)
        assert count() == -1, "a cold boot has no /tmp/count"
        cold = time.monotonic() - t
        assert not os.path.exists(os.path.join(vmdir, "suspend.state"))
        # booted cold, its RAM is its own file: the state holds only the devices
        cli(h, "exec", "s", "--", "sh", "-c", "echo kept > /tmp/k", check=0)
        t = time.monotonic()
        cli(h, "suspend", "s", check=0)
        took2 = time.monotonic() - t
        size2 = os.path.getsize(os.path.join(vmdir, "suspend.state"))
        t = time.monotonic()
        cli(h, "resume", "s", check=0)
        assert cli(h, "exec", "s", "--", "cat", "/tmp/k", check=0).stdout == b"kept\n"
        resume2 = time.monotonic() - t
        assert size2 < 4 << 20, size2
        print(f"\nfirst boot restored from a saved state (its RAM a private mapping, so the "
              f"state carries it): capsem suspend {took:.2f} s, resume to first exec "
              f"{resume:.2f} s; after a cold boot (RAM in its own file, {size2 >> 10} KiB of "
              f"state): suspend {took2:.2f} s, resume to first exec {resume2:.2f} s; cold "
              f"start to first exec {cold:.2f} s: resume {resume2 / cold:.2f}x (TCG)")
    finally:
        assert not clean_home(h, under=d), "QEMU or capsem-vm left behind"



# ---- snapshot start: new suspendable VMs restored from the saved, booted state of their kind ----

def test_snapshot_start_gives_each_vm_its_own_identity(tmp_path_factory):
    from test_cli_daemon import cli, clean_home
    need_image()
    d = tmp_path_factory.mktemp("snapstart")
    h = d / "home"
    h.mkdir()
    probe = ("hostname; echo $CAPSEM_VM_NAME; date +%s; "
             "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; "
             "grep -m1 ' _stext$' /proc/kallsyms | cut -d' ' -f1")
    try:
        # the first VM of its kind makes the saved state (a cold boot, then a save)
        t = time.monotonic()
        cli(h, "create", "-n", "first", "--suspendable", "--memory", MEM, check=0)
        first = time.monotonic() - t
        kinds = os.listdir(h / "cache" / "snapstart")
        assert len(kinds) == 1 and os.path.exists(h / "cache" / "snapstart" / kinds[0] / "ram")
        outs = {}
        for name in ("a", "b"):
            t = time.monotonic()
            cli(h, "create", "-n", name, "--suspendable", "--memory", MEM, check=0)
            r = cli(h, "exec", name, "--", "sh", "-c", probe, check=0)
            outs[name] = (r.stdout.decode().split("\n"), time.monotonic() - t)
        a, b = outs["a"][0], outs["b"][0]
        assert a[0] == "a" and b[0] == "b", (a, b)            # hostnames
        assert a[1] == "a" and b[1] == "b", (a, b)            # the VMs' own environment
        assert abs(int(a[2]) - time.time()) < 5 and abs(int(b[2]) - time.time()) < 5
        assert a[3] != b[3], "two restored VMs gave the same random bytes"
        # each has its own copy-on-write memory and disk
        cli(h, "exec", "a", "--", "sh", "-c", "echo mine > /root/f; echo ram > /tmp/f", check=0)
        assert cli(h, "exec", "b", "--", "cat", "/root/f").returncode != 0
        assert cli(h, "exec", "b", "--", "cat", "/tmp/f").returncode != 0
        saved = h / "cache" / "snapstart" / kinds[0] / "ram"
        before = hashlib_file(saved)
        # they suspend and resume like any suspendable VM (their RAM goes into the stream)
        cli(h, "suspend", "a", check=0)
        cli(h, "resume", "a", check=0)
        assert cli(h, "exec", "a", "--", "cat", "/tmp/f", check=0).stdout == b"ram\n"
        assert hashlib_file(saved) == before, "a restored VM wrote the saved RAM"
        restored = max(outs["a"][1], outs["b"][1])
    finally:
        assert not clean_home(h, under=d), "QEMU or capsem-vm left behind"
    # a cold create of the same kind, in a home of its own without snapshot starts
    h2 = d / "cold"
    h2.mkdir()
    try:
        t = time.monotonic()
        p = subprocess.run([CAPSEM, "create", "-n", "c", "--suspendable", "--memory", MEM],
                           env=dict(os.environ, CAPSEM_HOME=str(h2), CAPSEM_IMAGES_DIR=IMAGES,
                                    CAPSEM_SNAPSHOT_START="0"),
                           capture_output=True)
        assert p.returncode == 0, p
        cli(h2, "exec", "c", "--", "true", check=0)
        cold = time.monotonic() - t
        assert not (h2 / "cache" / "snapstart").exists()
    finally:
        assert not clean_home(h2, under=d)
    print(f"\nsnapshot start: create to first exec {restored:.2f} s vs cold {cold:.2f} s: "
          f"{restored / cold:.2f}x; the first create of a kind (cold boot + save + restore) "
          f"{first:.2f} s (TCG)")


def hashlib_file(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def test_capsem_run_starts_restored(tmp_path_factory):
    """`capsem run` (an ephemeral VM through capsemd) starts restored from the saved boot of its
    kind too: each run its own hostname, its own random bytes, its workspace; --no-suspendable
    boots cold with vsock and virtio-fs (or QEMU's 9p as a normal user)."""
    from test_cli_daemon import cli, clean_home
    need_image()
    d = tmp_path_factory.mktemp("runstart")
    h = d / "home"
    h.mkdir()
    probe = ("hostname; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; pwd; "
             "grep ' /root/workspace ' /proc/mounts | cut -d' ' -f3,4; echo made > f")
    try:
        cli(h, "run", "--memory", MEM, "--", "true", check=0)  # makes the saved state
        kinds = os.listdir(h / "cache" / "snapstart")
        assert len(kinds) == 1 and kinds[0].endswith("-0d-ws"), kinds
        outs, times = [], []
        for _ in range(3):
            t = time.monotonic()
            p = cli(h, "run", "--memory", MEM, "--", "sh", "-c", probe, check=0)
            times.append(time.monotonic() - t)
            outs.append(p.stdout.decode().split("\n"))
        assert len({o[0] for o in outs}) == 3, outs       # hostnames (the ids)
        assert len({o[1] for o in outs}) == 3, outs       # reseeded RNGs
        assert all(o[2] == "/root/workspace" and o[3].startswith("9p ") and "trans=fd" in o[3]
                   for o in outs), outs
        ws = d / "w"
        ws.mkdir()
        cli(h, "run", "--memory", MEM, "--workspace", str(ws), "--", "sh", "-c", probe, check=0)
        assert (ws / "f").read_text() == "made\n"
        t = time.monotonic()
        p = cli(h, "run", "--memory", MEM, "--no-suspendable", "--", "sh", "-c", probe,
                check=0)
        cold = time.monotonic() - t
        fs = p.stdout.decode().split("\n")[3]  # virtio-fs, or QEMU's 9p (a normal user, or
        assert fs.startswith("virtiofs ") or "trans=virtio" in fs, p  # a capped nofile)
        assert os.listdir(h / "cache" / "snapstart") == kinds
    finally:
        assert not clean_home(h, under=d), "QEMU or capsem-vm left behind"
    best = min(times)
    print(f"\ncapsem run restored: {', '.join(f'{x:.2f}' for x in times)} s; --no-suspendable "
          f"(cold) {cold:.2f} s: {best / cold:.2f}x (TCG)")
