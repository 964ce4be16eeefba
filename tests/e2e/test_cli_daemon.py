"""The capsem CLI against capsemd, end to end: create/list/info/exec/stop/start (disk persistence)/
logs/cp/delete/purge, the daemon path of `run`, and clear errors for bad input.

One private CAPSEM_HOME for the module; the daemon is started on demand by the first command and
killed at teardown, after which no process may mention the home directory."""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import CAPSEM, IMAGES, need_image, procs_mentioning, wait_for


@pytest.fixture(scope="module")
def dhome(tmp_path_factory):
    need_image()
    h = tmp_path_factory.mktemp("cli") / "home"
    h.mkdir()
    yield h
    left = clean_home(h)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left behind: {left}"


def clean_home(h, under=None):
    """The end of a test's daemon home: delete every VM (they outlive the daemon by design),
    stop the daemon; the pids of processes still mentioning `under` (default h)."""
    p = cli(h, "list", "-a", "--json")
    if p.returncode == 0:
        ids = [v["id"] for v in json.loads(p.stdout)]
        if ids:
            cli(h, "delete", *ids, timeout=300)
    stop_daemon(h)
    return procs_mentioning(str(under or h))


def stop_daemon(h):
    pidfile = h / "run" / "capsemd.pid"
    if not pidfile.exists():
        return
    try:
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
    except (ValueError, ProcessLookupError, IndexError):
        return
    try:
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or
                 open(f"/proc/{pid}/stat").read().split()[2] == "Z", 30, "capsemd to exit")
    except AssertionError:
        os.kill(pid, signal.SIGKILL)


def cli(h, *args, input=b"", timeout=180, check=None):
    env = dict(os.environ, CAPSEM_HOME=str(h), CAPSEM_IMAGES_DIR=IMAGES)
    env.pop("CAPSEM_NO_DAEMON", None)
    p = subprocess.run([CAPSEM, *args], input=input, capture_output=True, env=env,
                       timeout=timeout)
    if check is not None:
        assert p.returncode == check, (args, p.returncode, p.stdout, p.stderr)
    return p


def test_version_and_doctor(dhome):
    p = cli(dhome, "version", check=0)
    assert p.stdout.startswith(b"capsem ")
    p = cli(dhome, "doctor", "--json")
    d = json.loads(p.stdout)
    assert {c["check"] for c in d["checks"]} >= {"qemu", "accel", "image", "capsem-vm",
                                                  "capsemd", "disk"}
    assert p.returncode == (0 if d["ok"] else 1)
    assert all(c["status"] == "ok" for c in d["checks"] if c["check"] in ("qemu", "image"))


def test_lifecycle(dhome, tmp_path):
    p = cli(dhome, "create", "-n", "web", "--cpus", "2", "--memory", "512M", check=0)
    vid = p.stdout.decode().strip()
    assert len(vid) == 12 and all(c in "0123456789abcdef" for c in vid), p.stdout

    # list --json and the table
    vms = json.loads(cli(dhome, "list", "--json", check=0).stdout)
    web = [v for v in vms if v["name"] == "web"]
    assert len(web) == 1 and web[0]["id"] == vid and web[0]["state"] == "running"
    assert web[0]["cpus"] == 2 and web[0]["memory_mib"] == 512
    table = cli(dhome, "ls", check=0).stdout.decode()
    assert table.split("\n")[0].split() == ["ID", "NAME", "STATE", "CPUS", "MEMORY", "AGE"]
    row = [line for line in table.split("\n") if line.startswith(vid)][0].split()
    assert row[1:5] == ["web", "running", "2", "512M"]

    # info, by name and by id prefix
    info = json.loads(cli(dhome, "info", "web", "--json", check=0).stdout)
    assert info["id"] == vid and info["persistent"] is True
    assert b"web" in cli(dhome, "info", vid[:5], check=0).stdout

    # exec: output, exit status, stdin, env and workdir
    cli(dhome, "exec", "web", "--", "sh", "-c", "echo hi > /root/f", check=0)
    p = cli(dhome, "exec", "web", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (p.returncode, p.stdout, p.stderr) == (7, b"out\n", b"err\n")
    p = cli(dhome, "exec", "web", "--", "cat", input=b"piped\n", check=0)
    assert p.stdout == b"piped\n"
    p = cli(dhome, "exec", "-e", "K=v 1", "-w", "/tmp", "web", "-c", 'echo "$K $(pwd)"', check=0)
    assert p.stdout == b"v 1 /tmp\n"
    p = cli(dhome, "exec", vid[:6], "--timeout", "1", "--", "sleep", "30")
    assert p.returncode == 124 and b"timed out" in p.stderr

    # the disk survives stop/start
    assert cli(dhome, "stop", "web", check=0).stdout.strip() == vid.encode()
    assert json.loads(cli(dhome, "info", "web", "--json", check=0).stdout)["state"] == "stopped"
    assert vid.encode() not in cli(dhome, "list", check=0).stdout  # stopped: only with -a
    assert vid.encode() in cli(dhome, "list", "-a", check=0).stdout
    p = cli(dhome, "exec", "web", "--", "true")
    assert p.returncode == 125 and p.stderr.startswith(b"capsem: "), p.stderr
    cli(dhome, "start", "web", check=0)
    after_start = cli(dhome, "exec", "web", "--", "cat", "/root/f")  # checked at the end
    cli(dhome, "restart", "web", check=0)
    after_restart = cli(dhome, "exec", "web", "--", "cat", "/root/f")
    cli(dhome, "exec", "web", "--", "sh", "-c", "echo hi > /root/f", check=0)

    # logs
    cli(dhome, "logs", "web", check=0)  # the serial console: empty with a quiet kernel
    p = cli(dhome, "logs", "web", "--source", "vm", check=0)
    assert b'"event":"ready"' in p.stdout
    p = cli(dhome, "logs", "web", "--source", "vm", "--tail", "1", check=0)
    assert p.stdout.count(b"\n") == 1
    cli(dhome, "logs", "web", "--source", "qemu", check=0)

    # cp, both ways
    src = tmp_path / "notes.txt"
    src.write_bytes(b"line 1\nline 2\n\x00\xff binary\n")
    cli(dhome, "cp", str(src), "web:/root/", check=0)
    p = cli(dhome, "exec", "web", "--", "cat", "/root/notes.txt", check=0)
    assert p.stdout == src.read_bytes()
    cli(dhome, "cp", "web:/root/f", str(tmp_path), check=0)
    assert (tmp_path / "f").read_bytes() == b"hi\n"
    cli(dhome, "cp", "web:/root/notes.txt", str(tmp_path / "back.txt"), check=0)
    assert (tmp_path / "back.txt").read_bytes() == src.read_bytes()
    assert cli(dhome, "cp", "web:/root/f", "-", check=0).stdout == b"hi\n"
    p = cli(dhome, "cp", "web:/nonexistent", str(tmp_path / "x"))
    assert p.returncode == 1 and p.stderr.startswith(b"capsem: ")
    assert not (tmp_path / "x").exists()

    # name taken
    p = cli(dhome, "create", "-n", "web")
    assert p.returncode == 1 and p.stderr.startswith(b"capsem: ") and b"web" in p.stderr

    # delete
    assert cli(dhome, "delete", "web", check=0).stdout.strip() == vid.encode()
    assert not (dhome / "vms" / vid).exists()
    p = cli(dhome, "info", "web")
    assert p.returncode == 1 and p.stderr.startswith(b"capsem: ")

    # /root is the VM's disk: it survived stop/start and restart
    assert (after_start.returncode, after_start.stdout) == (0, b"hi\n"), after_start.stderr
    assert (after_restart.returncode, after_restart.stdout) == (0, b"hi\n"), after_restart.stderr


def test_ephemeral_persist_and_purge(dhome):
    a = cli(dhome, "create", check=0).stdout.decode().strip()
    b = cli(dhome, "create", check=0).stdout.decode().strip()
    info = json.loads(cli(dhome, "info", a, "--json", check=0).stdout)
    assert info["persistent"] is False
    cli(dhome, "persist", a, "kept", check=0)
    info = json.loads(cli(dhome, "info", "kept", "--json", check=0).stdout)
    assert info["id"] == a and info["persistent"] is True
    cli(dhome, "stop", "kept", check=0)
    p = cli(dhome, "purge", "-f", check=0)
    purged = p.stdout.decode().split()
    assert a in purged and b in purged
    vms = json.loads(cli(dhome, "list", "-a", "--json", check=0).stdout)
    assert not [v for v in vms if v["id"] in (a, b)]


def test_run_through_daemon(dhome):
    p = cli(dhome, "run", "--daemon", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    # capsem's own lines ("starting capsemd", the TCG warning where there is no usable KVM) are
    # the only extra ones
    err = b"".join(line for line in p.stderr.splitlines(keepends=True)
                   if not line.startswith(b"capsem: "))
    assert (p.returncode, p.stdout, err) == (7, b"out\n", b"err\n")
    p = cli(dhome, "run", "--daemon", "--", "cat", input=b"hello\n", check=0)
    assert p.stdout == b"hello\n"
    p = cli(dhome, "run", "--daemon", "--timeout", "1", "--", "sleep", "30")
    assert p.returncode == 124 and b"timed out" in p.stderr
    # the ephemeral VMs are gone
    vms = json.loads(cli(dhome, "list", "-a", "--json", check=0).stdout)
    assert not [v for v in vms if not v["persistent"]]


def test_guest_knows_its_vm(dhome):
    """CAPSEM_VM_ID and CAPSEM_VM_NAME in every exec; the hostname is the VM's name."""
    vid = cli(dhome, "create", "-n", "whoami", check=0).stdout.decode().strip()
    try:
        p = cli(dhome, "exec", "whoami", "--", "sh", "-c",
                'echo "$CAPSEM_VM_ID $CAPSEM_VM_NAME $(hostname)"', check=0)
        assert p.stdout.decode().split() == [vid, "whoami", "whoami"]
    finally:
        cli(dhome, "delete", "whoami", check=0)
    p = cli(dhome, "run", "--", "sh", "-c", 'echo "[$CAPSEM_VM_ID][$CAPSEM_VM_NAME]"', check=0)
    out = p.stdout.decode().strip()
    assert len(out) == 2 + 12 + 2 and out.endswith("][]"), out  # an id, no name


def test_run_ctrl_c_deletes_the_vm(dhome):
    env = dict(os.environ, CAPSEM_HOME=str(dhome), CAPSEM_IMAGES_DIR=IMAGES)
    proc = subprocess.Popen([CAPSEM, "run", "--daemon", "--", "sh", "-c",
                             "echo started; exec sleep 120"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"started\n"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    wait_for(lambda: not [v for v in json.loads(cli(dhome, "list", "-a", "--json",
                                                    check=0).stdout) if not v["persistent"]],
             30, "the ephemeral VM to be deleted")


def test_bad_input(dhome):
    for args, msg, rc in [
        (["info", "nope"], b"nope", 1),
        (["exec", "nope", "--", "true"], b"nope", 125),  # exec: 125 = capsem failed
        (["stop", "nope"], b"nope", 1),
        (["delete", "nope"], b"nope", 1),
        (["logs", "nope"], b"nope", 1),
        (["cp", "nope:/f", "-"], b"nope", 1),
    ]:
        p = cli(dhome, *args)
        assert p.returncode == rc and p.stderr.startswith(b"capsem: ") and msg in p.stderr, \
            (args, p.stderr)
        # one line for the error (besides "starting capsemd" when this test starts the daemon)
        lines = [ln for ln in p.stderr.strip().split(b"\n") if ln != b"capsem: starting capsemd"]
        assert len(lines) == 1, p.stderr
    for args, msg in [
        (["create", "--memory", "12Q"], b"--memory"),
        (["create", "--memory", "1M"], b"--memory"),
        (["create", "--disk", "lots"], b"--disk"),
        (["create", "--cpus", "0"], b"--cpus"),
        (["create", "-n", "Bad Name"], b"--name"),
        (["create", "--mount", "relative"], b"--mount"),
        (["exec"], b"no VM"),
        (["exec", "web"], b"no command"),
        (["info"], b"no VM"),
        (["cp", "a", "b"], b"VM path"),
        (["cp", "web:rel", "b"], b"absolute"),
        (["logs", "web", "--source", "x"], b"--source"),
        (["frob"], b"unknown command"),
    ]:
        p = cli(dhome, *args)
        assert p.returncode == 2 and msg in p.stderr, (args, p.stderr)
    for cmd in ["create", "list", "info", "exec", "shell", "stop", "start", "restart", "delete",
                "purge", "persist", "logs", "cp", "version", "doctor", "install", "uninstall",
                "run"]:
        p = cli(dhome, cmd, "--help")
        assert p.returncode == 0 and b"Usage: capsem" in p.stdout, cmd
    p = cli(dhome, "--help", check=0)
    for cmd in [b"create", b"list", b"exec", b"shell", b"purge", b"cp", b"doctor", b"install"]:
        assert b"\n  " + cmd in p.stdout


def test_install_uninstall(dhome, tmp_path):
    env = dict(os.environ, CAPSEM_HOME=str(dhome), XDG_CONFIG_HOME=str(tmp_path / "cfg"),
               DBUS_SESSION_BUS_ADDRESS="unix:path=/nonexistent", XDG_RUNTIME_DIR=str(tmp_path))
    unit = tmp_path / "cfg" / "systemd" / "user" / "capsemd.service"
    p = subprocess.run([CAPSEM, "install"], env=env, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    text = unit.read_text()
    # forking: capsemd's first process exits once it listens, so 'systemctl start' returns ready
    assert "ExecStart=/" in text and "capsemd\n" in text and "Type=forking\n" in text
    assert f"PIDFile={dhome}/run/capsemd.pid\n" in text
    assert f"Environment=CAPSEM_HOME={dhome}\n" in text
    assert b"not enabled" in p.stderr or b"enabled and started" in p.stdout
    p = subprocess.run([CAPSEM, "uninstall"], env=env, capture_output=True, timeout=60)
    assert p.returncode == 0 and not unit.exists(), p.stderr
