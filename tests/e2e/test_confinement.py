"""Host-side confinement of the processes a VM runs on (issue 18, first layers): QEMU runs with
its own seccomp filter (`-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,
resourcecontrol=deny`), no new privileges, and in a network namespace of its own that holds only
a loopback: it can reach no network (its sockets are Unix sockets on paths). This module also runs
as an unprivileged user (the namespace then sits in a user namespace of its own)."""
import os
import subprocess



def environ(pid):
    """A process's environment, b"" when it is not ours to read (another user's gateway)."""
    try:
        return open(f"/proc/{pid}/environ", "rb").read()
    except OSError:
        return b""


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


# ---- the layers added on top (issue 18): Landlock, cgroups, capsem-vm's own confinement, the
# MCP servers', capsemd's, and what is reported when seccomp kills a process ----

import json
import signal

import pytest

from conftest import (BUILD, CAPSEM, CAPSEM_VM, IMAGE, IMAGES, need_image, procs_mentioning,
                      stop_process, wait_for)

PROBE = os.path.join(BUILD, "tests", "helpers", "confine-probe")
ROOT = os.geteuid() == 0


def kmsg_readable():
    """Whether the kernel's log can be read here (dmesg_restrict lets only root, whatever the
    device node's mode says): seccomp kills then name their syscall."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    os.close(fd)
    return True


def landlock_abi():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(444, None, 0, 1)  # landlock_create_ruleset(NULL, 0, VERSION)


def layout(tmp_path):
    """A fake user: $HOME with an SSH key, $CAPSEM_HOME (in it, as by default) with a
    credentials file, and another VM's directory with a log: what a confined process must not
    open."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("secret\n")
    ch = home / ".capsem"
    ch.mkdir()
    (ch / "credentials").write_text('[anthropic]\napi_key = "sk-ant-test"\n')
    os.chmod(ch / "credentials", 0o600)
    other = ch / "vms" / "other"
    other.mkdir(parents=True)
    (other / "serial.log").write_text("another VM\n")
    return home, ch, other


@pytest.fixture(scope="module")
def victim():
    """A process of the test's user outside every confinement: what a ptrace probe attaches to
    (never the test itself: an attach that succeeds stops its target)."""
    p = subprocess.Popen(["sleep", "3600"])
    yield p.pid
    p.kill()
    p.wait()


def probes(home, ch, other, victim, extra=()):
    return ";".join([f"open:{home}/.ssh/id_ed25519", f"open:{ch}/credentials",
                     f"open:{other}/serial.log", f"create:{other}", "exec:/bin/true",
                     "connect:1.1.1.1:443", "connect:127.0.0.1:22", f"ptrace:{victim}",
                     "status:", *extra])


def results(text, who):
    """{probe: result} of confine-probe lines for who."""
    out = {}
    for ln in text.splitlines():
        if ln.startswith(f"confine-probe {who} "):
            what, _, res = ln[len(f"confine-probe {who} "):].rpartition(": ")
            out[what] = res
    return out


def start_vm(vmdir, home, ch, *extra, env=None):
    m = json.load(open(os.path.join(IMAGE, "manifest.json")))
    args = [CAPSEM_VM, "--vmdir", str(vmdir), "--kernel", os.path.join(IMAGE, "vmlinux"),
            "--initrd", os.path.join(IMAGE, "initrd.img"), "--memory", "256M"]
    if "rootfs" in m:
        args += ["--rootfs", os.path.join(IMAGE, m["rootfs"]["file"])]
    e = dict(os.environ, HOME=str(home), CAPSEM_HOME=str(ch))
    e.update(env or {})
    return subprocess.Popen(args + list(extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=e)


def memory_holds(pid, needle):
    """Whether any readable mapping of process pid holds needle (read as root through
    /proc/PID/mem; a mapping that cannot be read is skipped)."""
    found = False
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for ln in maps:
            f = ln.split()
            if "r" not in f[1] or (len(f) > 5 and f[5] in ("[vvar]", "[vsyscall]")):
                continue
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            prev = b""
            for off in range(lo, hi, 1 << 20):
                try:
                    mem.seek(off)
                    chunk = mem.read(min(1 << 20, hi - off))
                except OSError:
                    break
                if needle in prev[-len(needle):] + chunk:
                    found = True
                prev = chunk
    return found


def children(pid):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                st = open(f"/proc/{p}/stat").read()
            except OSError:
                continue
            if int(st.rpartition(")")[2].split()[1]) == pid:
                out.append(int(p))
    return out


def cmdline(pid):
    return open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")


def test_provider_keys_live_only_in_the_key_broker(tmp_path):
    """The keys (one from the environment, one from the credentials file) are in the key
    broker's memory and nowhere in capsem-vm's (the process whose proxy parses the guest's
    HTTP), nor in its environment or QEMU's. The broker is seccomp-filtered, without new
    privileges. The positive control (the broker's memory holds them) proves the
    scan reads what it should."""
    if not ROOT:
        pytest.skip("reading another process's memory needs root (CAP_SYS_PTRACE)")
    need_image()
    home, ch, _ = layout(tmp_path)
    env_key, file_key = b"sk-ant-ENVKEY-" + os.urandom(8).hex().encode(), \
        b"sk-FILEKEY-" + os.urandom(8).hex().encode()
    (ch / "credentials").write_text(f'[openai]\napi_key = "{file_key.decode()}"\n')
    p = start_vm(ch / "vms" / "this", home, ch, env={"ANTHROPIC_API_KEY": env_key.decode()})
    try:
        ev = json.loads(p.stdout.readline() or b"{}")
        assert ev.get("event") == "ready", (ev, p.stderr.read1())
        kids = {c: cmdline(c) for c in children(p.pid)}
        keyd = [c for c, a in kids.items() if b"--keyd" in a]
        assert len(keyd) == 1, kids
        keyd = keyd[0]
        st = status(keyd)
        assert st["Seccomp"] == "2" and st["NoNewPrivs"] == "1", st
        for k in (env_key, file_key):
            assert memory_holds(keyd, k), "the positive control failed: the scan is blind"
            assert not memory_holds(p.pid, k), "a provider key is in capsem-vm's memory"
            for pid in [p.pid, ev["qemu_pid"]]:
                assert k not in open(f"/proc/{pid}/environ", "rb").read(), pid
    finally:
        assert stop_process(p) == 0
    assert not procs_mentioning(str(tmp_path))


def test_channel_thread_confined_apart(tmp_path, victim):
    """On the serial channel (a suspendable VM's), the thread that parses the guest's mux
    frames has a Landlock domain of its own that allows no file at all (not even its VM
    directory, which the rest of capsem-vm may write) and one more seccomp filter than the
    process's other threads; the VM still boots and runs."""
    need_image()
    home, ch, other = layout(tmp_path)
    vmdir = ch / "vms" / "this"
    p = start_vm(vmdir, home, ch, "--channel", "serial",
                 env={"CAPSEM_CONFINE_PROBE": probes(home, ch, other, victim,
                                                     [f"open:{vmdir}/serial.log"]),
                      "CAPSEM_PROBE_ONLY": "capsem-vm-chan"})
    try:
        ev = json.loads(p.stdout.readline() or b"{}")
        assert ev.get("event") == "ready", ev
        filters = {}
        for t in os.listdir(f"/proc/{p.pid}/task"):
            st = status(f"{p.pid}/task/{t}")
            filters[open(f"/proc/{p.pid}/task/{t}/comm").read().strip()] = \
                int(st["Seccomp_filters"])
        main = filters["capsem-vm"]
        assert filters.get("capsem-vm-chan") == main + 1, filters
    finally:
        assert stop_process(p) == 0
    t = results(p.stderr.read().decode(), "capsem-vm-chan")
    assert t, "the channel thread did not probe"
    assert t["connect:1.1.1.1:443"] != "ok", t
    if landlock_abi() <= 0:
        pytest.skip("no Landlock on this kernel: the file probes are not enforced")
    for what in (f"open:{vmdir}/serial.log", f"open:{home}/.ssh/id_ed25519",
                 f"open:{ch}/credentials", "exec:/bin/true", f"create:{other}"):
        assert t[what] == "EACCES", (what, t)
    assert not procs_mentioning(str(tmp_path))


def test_capsem_vm_is_confined(vm):
    st = status(vm.proc.pid)
    assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2", st


def test_qemu_cgroup_limits(vm):
    cg = vm.ready.get("qemu_cgroup")
    if not ROOT:
        assert cg is None  # no delegated cgroups here: capsem-vm warned and went on
        return
    assert cg and os.path.isdir(cg), vm.ready
    assert str(vm.ready["qemu_pid"]) in open(os.path.join(cg, "cgroup.procs")).read().split()
    # 768 MiB of guest RAM + the 256 MiB translation cache (TCG) + the 256 MiB margin
    limit = int(open(os.path.join(cg, "memory.limit_in_bytes")).read())
    assert limit == (768 + 256 + 256) << 20, limit
    pids = [ln for ln in open(f"/proc/{vm.ready['qemu_pid']}/cgroup") if ":pids:" in ln]
    assert pids and pids[0].rstrip().endswith(os.path.basename(cg)), pids


def test_qemu_and_capsem_vm_probes(tmp_path, victim):
    """confine-probe started as QEMU (--qemu): it runs in QEMU's confinement exactly (cgroup,
    no_new_privs, network namespace, Landlock, inside capsem-vm's seccomp filter); capsem-vm
    probes from its own confinement too."""
    need_image()
    home, ch, other = layout(tmp_path)
    vmdir = ch / "vms" / "this"
    p = start_vm(vmdir, home, ch, "--qemu", PROBE, "--boot-timeout", "20",
                 env={"CAPSEM_CONFINE_PROBE": probes(home, ch, other, victim,
                                                     [f"open:{vmdir}/qemu.log",
                                                      "open:/proc/{child=--keyd}/mem"])})
    out, err = p.communicate(timeout=120)
    qlog = (vmdir / "qemu.log").read_text()
    q, v = results(qlog, "helper"), results(err.decode(), "capsem-vm")
    k = results((vmdir / "keyd.log").read_text(), "keyd")
    assert q and v and k, (qlog, err)
    # (the key broker cannot read its own /proc/self/status: no /proc in its ruleset; its
    # NoNewPrivs and Seccomp are checked from outside, test_provider_keys_live_only_in_...)
    keyd_mem = [w for w in v if w.startswith("open:/proc/") and w.endswith("/mem")]
    assert keyd_mem and keyd_mem[0] != "open:/proc/-1/mem", v
    assert q["status:"] == "NoNewPrivs=1 Seccomp=2", q
    assert v["status:"] == "NoNewPrivs=1 Seccomp=2", v
    # the probe was killed by seccomp (ptrace is on the kill list) or refused
    assert q[f"ptrace:{victim}"] in ("signal 31", "EPERM"), q
    assert v[f"ptrace:{victim}"] == "signal 31", v
    # QEMU: no TCP out, neither through its namespace nor Landlock
    assert q["connect:1.1.1.1:443"] != "ok" and q["connect:127.0.0.1:22"] != "ok", q
    if landlock_abi() <= 0:
        pytest.skip("no Landlock on this kernel: the file probes are not enforced")
    assert q[f"open:{vmdir}/qemu.log"] == "ok", q  # its own VM directory
    for what in (f"open:{home}/.ssh/id_ed25519", f"open:{ch}/credentials",
                 f"open:{other}/serial.log", f"create:{other}", "exec:/bin/true"):
        assert q[what] == "EACCES", (what, q)
    # capsem-vm: neither the SSH key nor another VM nor the credentials (the key broker's);
    # nor the key broker's memory (outside its Landlock domain: root or not); it may exec
    for what in (f"open:{home}/.ssh/id_ed25519", f"open:{other}/serial.log",
                 f"create:{other}", f"open:{ch}/credentials", keyd_mem[0]):
        assert v[what] == "EACCES", (what, v)
    assert v["exec:/bin/true"] == "ok", v
    # the key broker: the credentials only; nothing else of $HOME, no exec, no writes
    assert k[f"open:{ch}/credentials"] == "ok", k
    for what in (f"open:{home}/.ssh/id_ed25519", f"open:{other}/serial.log",
                 f"create:{other}", "exec:/bin/true"):
        assert k[what] == "EACCES", (what, k)
    assert k[f"ptrace:{victim}"] == "EPERM", k
    assert not procs_mentioning(str(tmp_path))


def test_mcp_server_probes(tmp_path, victim):
    """confine-probe as an MCP stdio server: capsem-vm's launcher gives it no_new_privs and a
    ruleset with nothing of $CAPSEM_HOME or the VM directory."""
    need_image()
    home, ch, other = layout(tmp_path)
    vmdir = ch / "vms" / "this"
    conf = tmp_path / "mcp.toml"
    env = {"CAPSEM_CONFINE_PROBE": probes(home, ch, other, victim, [f"open:{ch}/mcp.toml"]),
           "CAPSEM_PROBE_ONLY": "mcp"}
    conf.write_text(f'[servers.probe]\ncommand = "{PROBE}"\n'
                    f'env = {{ {", ".join(f"{k} = {json.dumps(v)}" for k, v in env.items())} }}\n')
    (ch / "mcp.toml").write_text("# not readable by the servers\n")
    p = start_vm(vmdir, home, ch, "--mcp-config", str(conf))
    try:
        ev = json.loads(p.stdout.readline() or b"{}")
        assert ev.get("event") == "ready", ev
    finally:
        assert stop_process(p) == 0
    m = results(p.stderr.read().decode(), "mcp")
    assert m, "the probe server never ran"
    assert m["status:"] == "NoNewPrivs=1 Seccomp=2", m
    assert m[f"ptrace:{victim}"] == "signal 31", m
    if landlock_abi() <= 0:
        pytest.skip("no Landlock on this kernel")
    for what in (f"open:{home}/.ssh/id_ed25519", f"open:{ch}/credentials",
                 f"open:{ch}/mcp.toml", f"open:{other}/serial.log", f"create:{other}"):
        assert m[what] == "EACCES", (what, m)
    assert m["exec:/bin/true"] == "ok", m


def test_qemu_killed_by_seccomp_is_reported(tmp_path):
    """A QEMU that makes a syscall on the kill list dies of SIGSYS; capsem-vm's error and log
    name it (with the syscall when the kernel's audit record is readable)."""
    need_image()
    home, ch, _ = layout(tmp_path)
    p = start_vm(ch / "vms" / "this", home, ch, "--qemu", PROBE,
                 env={"CAPSEM_CONFINE_PROBE": "die:ptrace", "CAPSEM_PROBE_ONLY": "helper"})
    out, err = p.communicate(timeout=120)
    ev = [json.loads(ln) for ln in out.decode().splitlines() if ln.startswith("{")]
    msg = [e["message"] for e in ev if e["event"] == "error"]
    assert msg and "killed by seccomp (SIGSYS)" in msg[0], (ev, err)
    assert b"QEMU killed by seccomp (SIGSYS)" in err, err
    if kmsg_readable():
        assert "syscall ptrace" in msg[0], msg


def test_qemu_cgroup_kills_qemu_not_the_host(tmp_path):
    """Lower QEMU's cgroup limit under what the guest then touches: the kernel's OOM killer
    ends QEMU alone, capsem-vm reports it, the host goes on."""
    if not ROOT:
        pytest.skip("cgroups need root here (no delegation on this host)")
    need_image()
    home, ch, _ = layout(tmp_path)
    p = start_vm(ch / "vms" / "this", home, ch, "--cpus", "1")
    ev = json.loads(p.stdout.readline() or b"{}")
    try:
        assert ev.get("event") == "ready", ev
        cg = ev["qemu_cgroup"]
        used = int(open(os.path.join(cg, "memory.usage_in_bytes")).read())
        open(os.path.join(cg, "memory.limit_in_bytes"), "w").write(str(used + (32 << 20)))
        import capsem_client as cc
        # 200 MiB into the guest's tmpfs: guest RAM QEMU must now back
        try:
            cc.sh(ev["vsock"], "head -c 200000000 /dev/zero > /tmp/fill; echo done",
                  io_timeout=60)
        except Exception:
            pass  # the VM went away under the exec: that is the point
        out, err = p.communicate(timeout=60)
    finally:
        stop_process(p)
    evs = [json.loads(ln) for ln in out.decode().splitlines() if ln.startswith("{")]
    msg = [e["message"] for e in evs if e["event"] == "error"]
    assert msg and "OOM killer" in msg[0], (evs, err)
    assert not os.path.exists(cg), "the cgroup outlived its VM"
    assert not procs_mentioning(str(tmp_path))


def cli(h, home, *args, env=None, timeout=180):
    e = dict(os.environ, CAPSEM_HOME=str(h), CAPSEM_IMAGES_DIR=IMAGES, HOME=str(home))
    e.pop("CAPSEM_NO_DAEMON", None)
    e.update(env or {})
    return subprocess.run([CAPSEM, *args], capture_output=True, env=e, timeout=timeout)


def stop_daemon(h):
    try:
        pid = int((h / "run" / "capsemd.pid").read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or
                 open(f"/proc/{pid}/stat").read().split()[2] == "Z", 30, "capsemd to exit")
    except (OSError, ValueError, IndexError):
        pass


def shm_base():
    """A directory outside /tmp and /var/tmp (capsemd's ruleset holds those: workspaces and
    shares live there), so that what the probes must not open is out of every rule."""
    import tempfile
    return tempfile.mkdtemp(dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)


def test_capsemd_is_confined(tmp_path, victim):
    """capsemd: no_new_privs, Landlock (as root too: the workspace's virtiofsd chroots instead of
    pivot_root) and its seccomp allow-list, which all it starts inherits; a seccomp kill of
    capsem-vm is in `capsem logs`."""
    need_image()
    import pathlib
    import shutil
    base = shm_base()
    try:
        capsemd_probes(pathlib.Path(base), victim)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert not procs_mentioning(base)


def capsemd_probes(tmp_path, victim):
    home, ch, other = layout(tmp_path)
    env = {"CAPSEM_CONFINE_PROBE": probes(home, ch, other, victim),
           "CAPSEM_PROBE_ONLY": "capsemd"}
    try:
        p = cli(ch, home, "list", env=env)
        assert p.returncode == 0, p
        pid = int((ch / "run" / "capsemd.pid").read_text().split()[0])
        st = status(pid)
        assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2", st
        d = results((ch / "run" / "capsemd.log").read_text(), "capsemd")
        assert d["status:"] == "NoNewPrivs=1 Seccomp=2", d
        # ptrace is on its kill list: the probe's child was killed, capsemd goes on
        assert d[f"ptrace:{victim}"] == "signal 31", d
        assert d["exec:/bin/true"] == "ok", d  # it starts programs
        if landlock_abi() > 0:
            # as root too now: the SSH key is outside its rules, its own home is not
            assert d[f"open:{home}/.ssh/id_ed25519"] == "EACCES", d
            assert d[f"open:{ch}/credentials"] == "ok", d
            # a folder outside its rules cannot be shared: said at create, not by a guest
            # that finds its workspace unreadable
            outside = tmp_path / "outside"
            outside.mkdir()
            p = cli(ch, home, "create", "--workspace", str(outside))
            assert p.returncode != 0 and b"is outside what capsemd may open" in p.stderr, p
        # a named VM booted by this daemon (its VMs run inside the daemon's confinement)
        p = cli(ch, home, "create", "-n", "sigsys")
        assert p.returncode == 0, p
        assert cli(ch, home, "stop", "sigsys").returncode == 0
        stop_daemon(ch)
        # booted again under a daemon whose QEMU makes a syscall on the kill list: the start
        # fails naming seccomp, and capsem logs VM --source vm says so
        p = cli(ch, home, "start", "sigsys",
                env={"CAPSEM_QEMU": PROBE, "CAPSEM_CONFINE_PROBE": "die:ptrace",
                     "CAPSEM_PROBE_ONLY": "helper"})
        assert p.returncode != 0 and b"killed by seccomp (SIGSYS)" in p.stderr, p
        logs = cli(ch, home, "logs", "sigsys", "--source", "vm")
        assert b"QEMU killed by seccomp (SIGSYS)" in logs.stdout, (p, logs)
        if kmsg_readable():
            assert b"syscall ptrace" in logs.stdout, logs
        # and a capsem-vm killed so: capsemd writes it into the VM's log and error
        stop_daemon(ch)
        p = cli(ch, home, "start", "sigsys",
                env={"CAPSEM_CONFINE_PROBE": "die:ptrace", "CAPSEM_PROBE_ONLY": "capsem-vm"})
        assert p.returncode != 0, p
        logs = cli(ch, home, "logs", "sigsys", "--source", "vm")
        assert b"capsemd: capsem-vm killed by seccomp (SIGSYS)" in logs.stdout, (p, logs)
        info = cli(ch, home, "info", "sigsys", "--json")
        assert b"killed by seccomp (SIGSYS)" in info.stdout, info
    finally:
        cli(ch, home, "delete", "sigsys")
        stop_daemon(ch)


def test_capsemd_killed_by_seccomp_is_reported(tmp_path):
    """capsemd cannot report its own death: the process that started it does (it is the
    daemon's subreaper until the daemon is ready), in capsemd.log and on the CLI's stderr; a
    later CLI that finds the daemon dead says so too, and so does the next daemon in its log,
    with the syscall where the kernel's log can be read."""
    home, ch, _ = layout(tmp_path)
    p = cli(ch, home, "list", env={"CAPSEM_CONFINE_PROBE": "die:ptrace",
                                   "CAPSEM_PROBE_ONLY": "capsemd"})
    assert p.returncode != 0, p
    assert b"killed by seccomp (SIGSYS)" in p.stderr, p
    assert b"capsemd could not start" in p.stderr, p
    log = (ch / "run" / "capsemd.log").read_text()
    assert "was killed by seccomp (SIGSYS)" in log, log
    dead = int((ch / "run" / "capsemd.pid").read_text().split()[0])
    if kmsg_readable():
        assert b"syscall ptrace" in p.stderr and "syscall ptrace" in log, (p, log)
    try:
        # the next command finds the dead daemon's pid file and starts a new one
        p = cli(ch, home, "list")
        assert p.returncode == 0, p
        if kmsg_readable():
            want = f"capsemd (pid {dead}) was killed by seccomp (SIGSYS): syscall ptrace"
            assert want.encode() in p.stderr, p
            log = (ch / "run" / "capsemd.log").read_text()
            assert f"the previous {want}" in log, log
    finally:
        stop_daemon(ch)


def test_mkfs_is_confined(tmp_path):
    """The mkfs.ext4 that capsemd runs for a VM's disk: no_new_privs, its Landlock ruleset and
    its own seccomp allow-list on top of capsemd's (a probe stands in for it: CAPSEM_MKFS); it
    cannot even make a process; a syscall on the kill list kills it, and the VM's create error
    says so."""
    need_image()
    home, ch, _ = layout(tmp_path)
    env = {"CAPSEM_MKFS": PROBE, "CAPSEM_CONFINE_PROBE":
           f"status:;open:{home}/.ssh/id_ed25519;die:ptrace", "CAPSEM_PROBE_ONLY": "helper"}
    try:
        p = cli(ch, home, "create", "-n", "disk", "--no-suspendable", env=env)
        assert p.returncode != 0, p
        assert b"cannot create the VM's disk (mkfs.ext4): killed by seccomp (SIGSYS)" in \
            p.stderr, p
        if kmsg_readable():
            assert b"syscall ptrace" in p.stderr, p
        # its stderr is in capsemd's log when it fails
        m = results((ch / "run" / "capsemd.log").read_text().replace(
            "capsemd: warning: mkfs.ext4: ", ""), "helper")
        assert m["status:"] == "NoNewPrivs=1 Seccomp=2", m
        # the probe's child: mkfs's filter has no clone
        assert m[f"open:{home}/.ssh/id_ed25519"] == "fork ENOSYS", m
    finally:
        cli(ch, home, "delete", "disk")
        stop_daemon(ch)
    assert not procs_mentioning(str(tmp_path))


def test_tar_is_confined(tmp_path):
    """The tar that capsemd runs over what a guest wrote (a fork archives the VM's workspace; a
    VM from the fork unpacks it; an ephemeral VM's overlay is unpacked): no_new_privs, its own
    Landlock ruleset (reads only the workspace, writes only the archive: no SSH key, no
    credentials, nothing else in $HOME) and seccomp allow-list (no process) on top of capsemd's;
    a syscall on its kill list kills it, and the fork's error says so. A probe stands in for it
    (CAPSEM_TAR); test_fork.py runs the real tar, confined, through all three uses."""
    need_image()
    home, ch, _ = layout(tmp_path)
    probes = ["status:", f"=open:{home}/.ssh/id_ed25519", f"=open:{ch}/credentials",
              f"=create:{home}", f"=create:{ch}", "open:/etc/hostname", "die:ptrace"]
    env = {"CAPSEM_TAR": PROBE, "CAPSEM_CONFINE_PROBE": ";".join(probes),
           "CAPSEM_PROBE_ONLY": "helper"}
    try:
        p = cli(ch, home, "create", "-n", "src", "--no-suspendable", env=env)
        assert p.returncode == 0, p
        p = cli(ch, home, "fork", "src", "src-img", env=env)
        assert p.returncode != 0, p
        assert b"cannot archive the VM's workspace" in p.stderr, p
        assert b"(tar): killed by seccomp (SIGSYS)" in p.stderr, p
        if kmsg_readable():
            assert b"syscall ptrace" in p.stderr, p
        m = results((ch / "run" / "capsemd.log").read_text().replace(
            "capsemd: warning: tar: ", ""), "helper")
        assert m["status:"] == "NoNewPrivs=1 Seccomp=2", m
        assert m["open:/etc/hostname"] == "fork ENOSYS", m  # tar's filter has no clone
        if landlock_abi() > 0:
            for what in (f"=open:{home}/.ssh/id_ed25519", f"=open:{ch}/credentials",
                         f"=create:{home}", f"=create:{ch}"):
                assert m[what] == "EACCES", (what, m)
        assert not os.path.exists(os.path.join(IMAGES, "src-img")), "a failed fork left an image"
    finally:
        cli(ch, home, "delete", "src")
        stop_daemon(ch)
    assert not procs_mentioning(str(tmp_path))


def test_gateway_is_confined(tmp_path, victim):
    """capsem-gateway, started by capsemd (capsem ui): no_new_privs, its own Landlock ruleset
    (its run directory; no TCP connect) and seccomp allow-list (no exec) on top of capsemd's; a
    gateway killed by seccomp is in capsemd's log."""
    import pathlib
    import shutil
    base = pathlib.Path(shm_base())
    try:
        home, ch, other = layout(base)
        env = {"CAPSEM_CONFINE_PROBE": probes(home, ch, other, victim),
               "CAPSEM_PROBE_ONLY": "capsem-gateway", "CAPSEM_GATEWAY_PORT": "0"}
        p = cli(ch, home, "ui", env=env)
        assert p.returncode == 0, p
        gws = [pid for pid in procs_mentioning("capsem-gateway") if str(ch).encode() in environ(pid)]
        assert len(gws) == 1, gws
        st = status(gws[0])
        assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2", st
        assert int(st.get("Seccomp_filters", "2")) >= 2, st  # capsemd's and its own
        g = results((ch / "run" / "capsemd.log").read_text(), "capsem-gateway")
        assert g["status:"] == "NoNewPrivs=1 Seccomp=2", g
        assert g[f"ptrace:{victim}"] == "signal 31", g
        assert g["exec:/bin/true"] == "signal 31", g  # execve is on its kill list
        if landlock_abi() > 0:
            for what in (f"open:{home}/.ssh/id_ed25519", f"open:{ch}/credentials",
                         f"open:{other}/serial.log", f"create:{other}"):
                assert g[what] == "EACCES", (what, g)
        if landlock_abi() >= 4:
            assert g["connect:1.1.1.1:443"] == "EACCES", g
            assert g["connect:127.0.0.1:22"] == "EACCES", g
        stop_daemon(ch)
        # a gateway that makes a syscall on its kill list: killed, capsemd says so
        p = cli(ch, home, "ui", env={"CAPSEM_CONFINE_PROBE": "die:ptrace",
                                     "CAPSEM_PROBE_ONLY": "capsem-gateway",
                                     "CAPSEM_GATEWAY_PORT": "0"})
        assert p.returncode != 0, p
        log = (ch / "run" / "capsemd.log").read_text()
        assert "capsem-gateway (pid" in log and "killed by seccomp (SIGSYS)" in log, log
        if kmsg_readable():
            assert "killed by seccomp (SIGSYS): syscall ptrace" in log, log
    finally:
        stop_daemon(ch)
        shutil.rmtree(base, ignore_errors=True)
    assert not procs_mentioning(str(base))


@pytest.mark.skipif(not ROOT, reason="virtiofsd runs as root only (a normal user's workspace "
                    "is 9p)")
def test_virtiofsd_chroot_under_landlock(tmp_path, victim):
    """Under a Landlocked capsemd (root too now) the workspace's virtiofsd of a
    --no-suspendable VM chroots into the workspace inside a ruleset of its own and an empty
    network namespace, with its seccomp filter on top of capsemd's; a probe started as
    virtiofsd (CAPSEM_VIRTIOFSD) finds only the workspace."""
    if landlock_abi() <= 0:
        pytest.skip("no Landlock: virtiofsd keeps its namespace sandbox")
    need_image()
    home, ch, other = layout(tmp_path)
    ws = tmp_path / "ws"
    ws.mkdir()
    env = {"CAPSEM_WORKSPACE_TRANSPORT": "virtiofs"}
    try:
        p = cli(ch, home, "create", "-n", "vfs", "--no-suspendable", "--memory", "256M",
                "--workspace", str(ws), env=env)
        assert p.returncode == 0, p
        vfs = [pid for pid in procs_mentioning(f"source={ws}")
               if b"virtiofsd" in open(f"/proc/{pid}/cmdline", "rb").read()]
        assert len(vfs) == 1, vfs  # chroot: no namespace parent
        assert b"sandbox=chroot" in open(f"/proc/{vfs[0]}/cmdline", "rb").read()
        st = status(vfs[0])
        assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2", st
        assert int(st.get("Seccomp_filters", "2")) >= 2, st  # capsemd's and its own
        assert os.readlink(f"/proc/{vfs[0]}/root") == str(ws)
        assert os.readlink(f"/proc/{vfs[0]}/ns/net") != os.readlink("/proc/self/ns/net")
        # the guest's files arrive through it
        p = cli(ch, home, "exec", "vfs", "--", "sh", "-c",
                "grep -c ' /root/workspace virtiofs ' /proc/mounts; echo hi > hi.txt")
        assert p.returncode == 0 and p.stdout.startswith(b"1"), p
        assert (ws / "hi.txt").read_text() == "hi\n"
    finally:
        cli(ch, home, "delete", "vfs")
        stop_daemon(ch)
    # a probe in virtiofsd's place (capsem-vm started directly): its ruleset and namespace
    vmdir = ch / "vms" / "probe"
    p = start_vm(vmdir, home, ch, "--workspace", str(ws), "--boot-timeout", "20",
                 env={"CAPSEM_WORKSPACE_TRANSPORT": "virtiofs", "CAPSEM_VIRTIOFSD": PROBE,
                      "CAPSEM_CONFINE_PROBE": probes(home, ch, other, victim,
                                                     [f"create:{ws}",
                                                      f"open:{vmdir}/serial.log"]),
                      "CAPSEM_PROBE_ONLY": "helper"})
    p.communicate(timeout=120)
    v = results((vmdir / "virtiofsd.log").read_text(), "helper")
    assert v, (vmdir / "virtiofsd.log").read_text()
    assert v["status:"].startswith("NoNewPrivs=1"), v
    assert v[f"create:{ws}"] == "ok", v
    for what in (f"open:{home}/.ssh/id_ed25519", f"open:{ch}/credentials",
                 f"open:{other}/serial.log", f"open:{vmdir}/serial.log", "exec:/bin/true"):
        assert v[what] == "EACCES", (what, v)
    assert v["connect:1.1.1.1:443"] != "ok" and v["connect:127.0.0.1:22"] != "ok", v
    assert not procs_mentioning(str(tmp_path))


def test_doctor_lists_the_layers():
    """capsem doctor: each kernel layer and each confined process outside a VM, on or off."""
    p = subprocess.run([CAPSEM, "doctor", "--json"], capture_output=True, timeout=120)
    d = json.loads(p.stdout)
    layers = {l["layer"]: l for l in d["confinement"]}
    assert set(layers) >= {"landlock", "seccomp", "cgroups", "userns", "audit-log", "capsemd",
                           "mkfs", "tar", "gateway", "virtiofsd"}, layers
    for name in ("capsemd", "mkfs", "tar", "gateway"):
        on = layers["landlock"]["on"] and layers["seccomp"]["on"]
        assert layers[name]["on"] == on, layers[name]
        assert layers[name]["detail"].startswith("on: no_new_privs" if on else "off: "), \
            layers[name]
    p = subprocess.run([CAPSEM, "doctor", "--json"], capture_output=True, timeout=120,
                       env=dict(os.environ, CAPSEM_CONFINE="0"))
    layers = {l["layer"]: l for l in json.loads(p.stdout)["confinement"]}
    assert not layers["capsemd"]["on"] and "not enforced" in layers["capsemd"]["detail"], layers


def test_workspace_server_probes(tmp_path, victim):
    """The workspace's 9p server of a suspendable VM (capsem-vm --ws9p-serve) parses the
    guest's bytes: it runs in a process of its own, with no new privileges, capsem-vm's seccomp
    filter and a narrower one of its own, and a Landlock ruleset that holds the workspace and
    nothing of $CAPSEM_HOME, the VM directory, $HOME or another VM; no exec, no TCP."""
    need_image()
    home, ch, other = layout(tmp_path)
    vmdir = ch / "vms" / "this"
    ws = tmp_path / "ws"
    ws.mkdir()
    env = {"CAPSEM_CONFINE_PROBE": probes(home, ch, other, victim,
                                          [f"create:{ws}", f"open:{vmdir}/serial.log"]),
           "CAPSEM_PROBE_ONLY": "ws9p"}
    p = start_vm(vmdir, home, ch, "--channel", "serial", "--workspace", str(ws), env=env)
    try:
        ev = json.loads(p.stdout.readline() or b"{}")
        assert ev.get("event") == "ready", ev
        log = (vmdir / "ws9p.log").read_text()
        servers = [pid for pid in procs_mentioning("--ws9p-serve")
                   if str(ws).encode() in open(f"/proc/{pid}/cmdline", "rb").read()]
        assert len(servers) == 1, servers
        st = status(servers[0])
        assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2", st
        assert int(st.get("Seccomp_filters", "2")) >= 2, st  # capsem-vm's and its own
    finally:
        assert stop_process(p) == 0
    w = results(log, "ws9p")
    assert w, log
    assert w["status:"] == "NoNewPrivs=1 Seccomp=2", w
    assert w[f"ptrace:{victim}"] == "signal 31", w
    assert w["connect:1.1.1.1:443"] != "ok" and w["connect:127.0.0.1:22"] != "ok", w
    if landlock_abi() <= 0:
        pytest.skip("no Landlock on this kernel: the file probes are not enforced")
    assert w[f"create:{ws}"] == "ok", w
    for what in (f"open:{home}/.ssh/id_ed25519", f"open:{ch}/credentials",
                 f"open:{other}/serial.log", f"create:{other}", f"open:{vmdir}/serial.log",
                 "exec:/bin/true"):
        assert w[what] == "EACCES", (what, w)
    assert not procs_mentioning(str(tmp_path))
