"""capsem-vm on its own: failure reporting and cleanup when the guest misbehaves."""
import json
import os
import subprocess

from conftest import CAPSEM_VM, IMAGE, need_image, procs_mentioning


def start(vmdir, *extra, timeout=120):
    need_image()
    p = subprocess.run([CAPSEM_VM, "--vmdir", str(vmdir), "--kernel", os.path.join(IMAGE, "vmlinux"),
                        "--initrd", os.path.join(IMAGE, "initrd.img"), *extra],
                       capture_output=True, timeout=timeout)
    events = [json.loads(line) for line in p.stdout.splitlines()]
    return p, events


def test_guest_that_never_says_hello(tmp_path):
    # PID 1 is a shell waiting on the console: the kernel boots, but no agent ever connects
    p, ev = start(tmp_path / "vm", "--rm", "--boot-timeout", "8", "--append", "rdinit=/bin/sh")
    assert p.returncode == 1
    err = [e for e in ev if e["event"] == "error"]
    assert err and "did not say hello within 8.0 s" in err[0]["message"], ev
    assert "serial_tail" in err[0]
    assert ev[-1]["event"] == "stopped"
    assert not (tmp_path / "vm").exists()
    assert not procs_mentioning(str(tmp_path))


def test_guest_kernel_panic_is_reported(tmp_path):
    p, ev = start(tmp_path / "vm", "--append", "rdinit=/no/such/init")
    assert p.returncode == 1
    err = [e for e in ev if e["event"] == "error"]
    assert err and "QEMU exited unexpectedly" in err[0]["message"], ev
    assert str(tmp_path / "vm" / "serial.log") in err[0]["message"]
    # without --rm the logs stay for the user to read; the sockets are gone
    left = sorted(os.listdir(tmp_path / "vm"))
    assert left == ["qemu.log", "serial.log"], left
    assert b"Kernel panic" in (tmp_path / "vm" / "serial.log").read_bytes()
    assert not procs_mentioning(str(tmp_path))


def test_bad_arguments(tmp_path):
    for args, msg in [([], b"required"), (["--vmdir", "x", "--kernel", "/nope", "--initrd", "/nope"], b"/nope"),
                      (["--memory", "1K"], b"--memory"), (["--accel", "xen"], b"--accel")]:
        p = subprocess.run([CAPSEM_VM, *args], capture_output=True, timeout=30)
        assert p.returncode in (1, 2) and msg in p.stderr, (args, p.stderr)
