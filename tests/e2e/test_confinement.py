"""Host-side confinement of the processes a VM runs on (issue 18, first layers): QEMU runs with
its own seccomp filter (`-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,
resourcecontrol=deny`), no new privileges, and in a network namespace of its own that holds only
a loopback: it can reach no network (its sockets are Unix sockets on paths). This module also runs
as an unprivileged user (the namespace then sits in a user namespace of its own)."""
import os
import subprocess



def status(pid):
    return dict(ln.rstrip("\n").split(":\t", 1) for ln in open(f"/proc/{pid}/status")
                if ":\t" in ln)


def test_qemu_is_seccomp_filtered_without_new_privileges(vm):
    st = status(vm.ready["qemu_pid"])
    assert st["Seccomp"] == "2" and st["NoNewPrivs"] == "1", st


def test_qemu_has_no_network(vm):
    pid = vm.ready["qemu_pid"]
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    devs = [ln.split(":")[0].strip() for ln in open(f"/proc/{pid}/net/dev").readlines()[2:]]
    assert devs == ["lo"], devs
    if os.geteuid() != 0:
        return
    # from inside that namespace nothing is reachable, not even the host's own addresses
    probe = ("import socket\nfor a in ('1.1.1.1', '127.0.0.1'):\n"
             "    s = socket.socket(); s.settimeout(3)\n"
             "    try:\n        s.connect((a, 22)); print(a, 'connected')\n"
             "    except OSError as e:\n        print(a, e.errno)\n")
    r = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "/usr/bin/python3", "-c", probe],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r
    assert "connected" not in r.stdout, r.stdout
