"""capsem-vm's daemon-facing options with real VMs: --control (the supervisor socket), --disk
(persistent /root) and --mount (host folders over 9p)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

import capsem_client as cc
from conftest import CAPSEM_VM, IMAGE, VM, need_image, procs_mentioning, wait_for

MKFS = shutil.which("mkfs.ext4") or "/usr/sbin/mkfs.ext4"
E2FSCK = shutil.which("e2fsck") or "/usr/sbin/e2fsck"


def vm_args(vmdir, *extra):
    return [CAPSEM_VM, "--vmdir", str(vmdir), "--kernel", os.path.join(IMAGE, "vmlinux"),
            "--initrd", os.path.join(IMAGE, "initrd.img"), *extra]


def make_disk(path, size=64 << 20):
    with open(path, "wb") as f:
        f.truncate(size)
    subprocess.run([MKFS, "-q", "-F", str(path)], check=True, capture_output=True)
    return path


def alive(pid):
    """True while pid runs (a zombie waiting for a reaper that is not us counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Ctl:
    """A client of capsem-vm's control socket: JSON lines both ways."""

    def __init__(self, path, timeout=30):
        wait_for(lambda: os.path.exists(path), timeout, f"{path} to appear")
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(str(path))
        self.buf = b""

    def event(self, timeout=120):
        """The next event, or None at EOF (or a reset: closed with our bytes unread)."""
        self.s.settimeout(timeout)
        while b"\n" not in self.buf:
            try:
                d = self.s.recv(65536)
            except ConnectionResetError:
                return None
            if not d:
                return None
            self.buf += d
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def until_ready(self, timeout=120):
        ev = self.event(timeout)
        if ev and ev["event"] == "booting":
            ev = self.event(timeout)
        assert ev and ev["event"] == "ready", ev
        return ev

    def send(self, obj):
        self.s.sendall(json.dumps(obj).encode() + b"\n")

    def close(self):
        self.s.close()


@pytest.fixture
def ctl_vm(tmp_path):
    """capsem-vm --control supervisor.sock (relative to the VM directory), stdout to a file the
    way the daemon starts it. Yields (Popen, vmdir); kills it if a test left it running."""
    need_image()
    vmdir = tmp_path / "vm"
    started = []

    def start(*extra, ctl="supervisor.sock"):
        log = open(tmp_path / "vm-out.log", "ab")
        p = subprocess.Popen(vm_args(vmdir, "--control", ctl, *extra), stdin=subprocess.DEVNULL,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        started.append(p)
        return p, vmdir

    yield start
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert not procs_mentioning(str(tmp_path)), "QEMU or capsem-vm left behind"


# ---- --control ----

def test_control_clients_see_state_and_stop_the_vm(ctl_vm):
    p, vmdir = ctl_vm()
    sock = vmdir / "supervisor.sock"
    a = Ctl(sock)
    first = a.event()
    assert first["event"] in ("booting", "ready"), first
    ready = first if first["event"] == "ready" else a.event()
    assert ready["event"] == "ready" and ready["vsock"] == str(vmdir / "vsock"), ready
    b = Ctl(sock)
    assert b.event() == ready  # a late client gets the very same ready event
    assert (vmdir / "supervisor.pid").read_text() == f"{p.pid}\n"
    assert oct(os.stat(sock).st_mode & 0o777) == "0o600"

    # clients going away never stop the VM
    a.close()
    b.close()
    time.sleep(0.5)  # the point: nothing happens (the VM keeps running) for a while
    assert p.poll() is None
    # SIGHUP neither (the daemon's session may go away)
    p.send_signal(signal.SIGHUP)
    time.sleep(0.5)  # the point: nothing happens for a while
    assert p.poll() is None
    assert cc.sh(str(vmdir / "vsock"), "echo alive").stdout == b"alive\n"

    # a client that floods a line over 4 KiB is dropped; the others are not disturbed
    c, d, bad = Ctl(sock), Ctl(sock), Ctl(sock)
    for x in (c, d, bad):
        assert x.event() == ready
    bad.s.sendall(b"x" * 5000)
    assert bad.event(timeout=10) is None
    assert p.poll() is None

    c.send({"cmd": "stop"})
    for x in (c, d):
        ev = x.event()
        assert ev["event"] == "stopped" and ev["qemu_status"] == 0, ev
        assert x.event() is None  # then closed
    assert p.wait(60) == 0
    assert not sock.exists()
    assert not (vmdir / "supervisor.pid").exists()
    out = (vmdir.parent / "vm-out.log").read_text()
    assert '"event":"ready"' in out and '"event":"stopped"' in out  # stdout as before


def test_control_absolute_path_and_boot_failure(ctl_vm):
    # an absolute --control path; a guest that fails: a client gets the error, then stopped
    p, vmdir = ctl_vm("--boot-timeout", "5", "--append", "rdinit=/bin/sh",
                      ctl="/dev/null/x")
    assert p.wait(30) == 1  # cannot listen there
    out = (vmdir.parent / "vm-out.log").read_text()
    assert "cannot listen on --control /dev/null/x" in out, out

    sock = vmdir / "supervisor.sock"
    p, vmdir = ctl_vm("--boot-timeout", "5", "--append", "rdinit=/bin/sh", ctl=str(sock))
    a = Ctl(sock)
    assert a.event() == {"event": "booting"}
    ev = a.event()
    assert ev["event"] == "error" and "did not say hello" in ev["message"], ev
    assert a.event()["event"] == "stopped"
    assert a.event() is None
    assert p.wait(30) == 1
    assert not sock.exists()


def test_control_vm_outlives_its_starter(tmp_path):
    """The daemon starts capsem-vm with setsid and may die: the VM must not notice."""
    need_image()
    vmdir = tmp_path / "vm"
    cmd = " ".join(f"'{a}'" for a in vm_args(vmdir, "--control", "supervisor.sock"))
    parent = subprocess.Popen(["sh", "-c", f"setsid {cmd} </dev/null >{tmp_path}/out.log 2>&1 &"
                               " echo $!; wait"], stdout=subprocess.PIPE)
    pid = int(parent.stdout.readline())
    try:
        a = Ctl(vmdir / "supervisor.sock")
        a.until_ready()
        parent.kill()
        parent.wait()
        os.kill(pid, signal.SIGHUP)
        time.sleep(1)  # the point: the VM does not notice, for a while
        assert alive(pid)
        assert cc.sh(str(vmdir / "vsock"), "echo still here").stdout == b"still here\n"
        a.close()
        # a new client (a restarted daemon) adopts it and stops it
        b = Ctl(vmdir / "supervisor.sock")
        assert b.event()["event"] == "ready"
        b.send({"cmd": "stop"})
        assert b.event()["event"] == "stopped"
        wait_for(lambda: not alive(pid), 60, "capsem-vm to exit")
        assert not (vmdir / "supervisor.pid").exists()
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert not procs_mentioning(str(tmp_path))


# ---- --disk ----

def test_disk_persists_root(tmp_path):
    need_image()
    disk = make_disk(tmp_path / "disk.img")
    v = VM(tmp_path / "vm1", "--disk", str(disk))
    try:
        assert "disk" in [s["name"] for s in v.ready["stages"]]
        r = cc.sh(v.vsock, "echo persisted > /root/f && df /root | tail -1 && mount")
        assert r.code == 0, r
        assert r.stdout.splitlines()[0].startswith(b"/dev/vda"), r.stdout
        assert b"/dev/vda on /root type ext4" in r.stdout
    finally:
        assert v.stop() == 0
    if os.path.exists(E2FSCK):  # shut down cleanly: nothing for fsck to repair
        fsck = subprocess.run([E2FSCK, "-fn", str(disk)], capture_output=True)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr

    v = VM(tmp_path / "vm2", "--disk", str(disk))
    try:
        assert cc.sh(v.vsock, "cat /root/f; stat -c %a /root").stdout == b"persisted\n700\n"
    finally:
        assert v.stop() == 0
    assert not procs_mentioning(str(tmp_path))


def test_disk_without_a_file_system_boots_without_it(tmp_path):
    need_image()
    disk = tmp_path / "blank.img"
    with open(disk, "wb") as f:
        f.truncate(8 << 20)
    v = VM(tmp_path / "vm", "--disk", str(disk))
    try:
        assert "disk_failed" in [s["name"] for s in v.ready["stages"]]
        assert cc.sh(v.vsock, "echo x > /root/f && cat /root/f").stdout == b"x\n"
    finally:
        v.stop()
    assert b"could not mount --disk, /root is not persistent" in v.proc.stderr.read()
    assert b"cannot mount the disk /dev/vda" in (tmp_path / "vm" / "serial.log").read_bytes()


# ---- --mount ----

def test_mounts(tmp_path):
    need_image()
    ro = tmp_path / "ro,dir"  # a ',' must be escaped for QEMU, not refused
    rw = tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "hello.txt").write_text("from the host\n")
    v = VM(tmp_path / "vm", "--mount", f"{ro}:/mnt/in:ro", "--mount", f"{rw}:/root/out")
    try:
        assert "mounts" in [s["name"] for s in v.ready["stages"]]
        r = cc.sh(v.vsock, "cat /mnt/in/hello.txt")
        assert r.code == 0 and r.stdout == b"from the host\n", r
        r = cc.sh(v.vsock, "echo no > /mnt/in/new; touch /mnt/in/hello.txt")
        assert r.code != 0 and r.stderr.count(b"Read-only file system") == 2, r
        assert sorted(os.listdir(ro)) == ["hello.txt"]
        r = cc.sh(v.vsock, "echo from the guest > /root/out/g.txt && mkdir /root/out/d")
        assert r.code == 0, r
        assert (rw / "g.txt").read_text() == "from the guest\n"
        assert (rw / "d").is_dir()
        (rw / "late.txt").write_text("later\n")  # host changes show up at once
        assert cc.sh(v.vsock, "cat /root/out/late.txt").stdout == b"later\n"
    finally:
        assert v.stop() == 0
    assert not procs_mentioning(str(tmp_path))


# ---- bad values ----

def test_bad_disk_and_mount_values(tmp_path):
    need_image()
    d = tmp_path / "dir"
    d.mkdir()
    f = tmp_path / "file"
    f.write_text("x")
    small = tmp_path / "small.img"
    small.write_bytes(b"\0" * 4096)
    nine = [a for i in range(9) for a in ("--mount", f"{d}:/m{i}")]
    cases = [
        (["--disk", "/no/such.img"], "--disk /no/such.img"),
        (["--disk", str(d)], "not a regular file"),
        (["--disk", str(small)], "too small"),
        (["--mount", "/no/such/dir:/x"], "/no/such/dir"),
        (["--mount", f"{f}:/x"], "is not a directory"),
        (["--mount", str(d)], "expected HOST:GUEST"),
        (["--mount", f"{d}:relative"], "must be absolute"),
        (["--mount", f"{d}:/a/../etc"], "must be absolute"),
        (["--mount", f"{d}:/proc/x"], "not /, /proc"),
        (["--mount", f"{d}:/"], "not /, /proc"),
        (["--mount", f"{d}:/a b"], "A-Z a-z"),
        (["--mount", f"{d}:/x", "--mount", f"{d}:/x:ro"], "already a mount point"),
        (nine, "at most 8"),
        (["--control", ""], "--control"),
    ]
    for args, msg in cases:
        p = subprocess.run(vm_args(tmp_path / "vm", *args), capture_output=True, timeout=30)
        assert p.returncode == 2 and msg.encode() in p.stderr, (args, p.returncode, p.stderr)
        assert not (tmp_path / "vm").exists()
