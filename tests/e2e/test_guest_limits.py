"""Guest resource limits (issue 17, item 5): every exec's command runs in its own cgroup under a
limited workload group (memory, swap, tasks), while init, the agent, its session processes and the
proxies stay outside with room to spare (docs/PROTOCOL.md, "Agent behaviour: limits").

A fork bomb or a program that eats all memory must not make the VM unusable: exec, a TTY exec
(what `capsem shell` uses) and stop keep working; a timed-out exec takes everything it started
with it (setsid'ed processes and fork bombs too); OOM kills land in the workload and are
reported in EXIT. The minimal image's busybox sh cannot redefine `:` (a special builtin), so the
bomb is `f(){ f|f& }; f`. Commands that must work on a saturated guest are run without a shell
(argv mode, busybox applets): a full workload refuses every fork inside it, by design.

Timeouts are generous (TCG, a shared machine); nothing here passes or fails on timing, but the
measured times are printed (pytest -s) for the record.
"""
import os
import shutil
import sqlite3
import struct
import subprocess
import threading
import time

import pytest

import capsem_client as cc
from conftest import VM, need_image, wait_for

MEM = "768M"
CG = "/sys/fs/cgroup"
WL = CG + "/workload"
BOMB = "f(){ f|f& }; f"
# the cgroup of this exec, printed with builtins only (read, echo): no fork needed
SELF_CG = "read -r cg < /proc/self/cgroup; echo ${cg#0::}; "
HOG = "x=y; while :; do x=$x$x; done"
SLOW = 600  # seconds: the most any single exec may take on a saturated TCG guest
EXIT_OOM = 1
MKFS = shutil.which("mkfs.ext4") or "/usr/sbin/mkfs.ext4"


def boot(tmp_path_factory, *extra):
    need_image()
    d = tmp_path_factory.mktemp("limits")
    v = VM(d / "vm", "--cpus", "2", "--memory", MEM, "--ledger", str(d / "ledger.db"), *extra)
    v.ledger = d / "ledger.db"
    return v


def oom_rows(vm):
    """The ledger's exec rows flagged oom_killed (the writer commits in the background)."""
    db = sqlite3.connect(f"file:{vm.ledger}?mode=ro", uri=True)
    try:
        return db.execute("SELECT argv FROM exec WHERE oom_killed = 1").fetchall()
    finally:
        db.close()


@pytest.fixture(scope="module")
def vm(tmp_path_factory):
    v = boot(tmp_path_factory)
    yield v
    assert v.stop() == 0


@pytest.fixture
def fresh(tmp_path_factory):
    """A VM of its own, for tests that leave the guest saturated."""
    v = boot(tmp_path_factory)
    yield v
    v.stop()


def run(vm, argv, flags=0, timeout_ms=0, io_timeout=SLOW, stdin=b""):
    """One exec; returns (Result, EXIT flags, seconds). Like cc.run, but keeps EXIT's flags."""
    s = cc.connect(vm.vsock, timeout=io_timeout)
    t0 = time.monotonic()
    try:
        s.sendall(cc.frame(cc.EXEC, cc.exec_payload(argv, flags=flags, timeout_ms=timeout_ms)))
        if stdin is not None:
            s.sendall(cc.frame(cc.STDIN))
        res, buf, exit_flags = cc.Result(), bytearray(), 0
        s.settimeout(io_timeout)
        while res.kind is None and res.error is None:
            d = s.recv(1 << 20)
            if not d:
                raise ConnectionError(f"connection closed before EXIT: {res!r}")
            buf += d
            while len(buf) >= 6:
                n, t = struct.unpack(">IH", buf[:6])
                if len(buf) < 6 + n:
                    break
                pl, buf = bytes(buf[6:6 + n]), buf[6 + n:]
                if t == cc.STDOUT:
                    res.stdout += pl
                elif t == cc.STDERR:
                    res.stderr += pl
                elif t == cc.STARTED:
                    res.pid = struct.unpack(">I", pl)[0]
                elif t == cc.EXIT:
                    res.kind, res.code = struct.unpack(">Bi", pl[:5])
                    if len(pl) == 41:
                        exit_flags = struct.unpack(">I", pl[37:])[0]
                    else:
                        assert len(pl) == 37, pl
                elif t == cc.ERROR:
                    res.error = pl[8:].decode(errors="replace")
        return res, exit_flags, time.monotonic() - t0
    finally:
        s.close()


def cat(vm, path):
    """A cgroup or /proc file, read by a command that does not fork (works on a full guest). On
    a guest whose workload is out of memory the OOM killer may pick this very command (its
    process is as small as any bomb's): that is reported, and the read is tried again."""
    for _ in range(20):
        r, flags, _ = run(vm, ["cat", path])
        if not (r.kind == cc.EXIT_SIGNAL and flags & EXIT_OOM):
            break
    assert r.kind == cc.EXIT_CODE and r.code == 0, (path, r)
    return r.stdout.decode()


def num(vm, path):
    return int(cat(vm, path).split()[0])


def field(vm, path, key):
    for line in cat(vm, path).splitlines():
        k, v = line.split()
        if k == key:
            return int(v)
    raise KeyError(key)


def exists(vm, path):
    r, _, _ = run(vm, ["test", "-e", path])
    assert r.kind == cc.EXIT_CODE and r.code in (0, 1), r
    return r.code == 0


def system_procs(vm):
    """{pid: comm} of init and its children on the system side (the agent, the proxies); the
    session processes (the agent's children) come and go with each exec."""
    out = {}
    for pid in cat(vm, CG + "/capsem/cgroup.procs").split():
        r, _, _ = run(vm, ["cat", f"/proc/{pid}/stat"])
        if r.code != 0:
            continue  # a session that ended meanwhile
        stat = r.stdout.decode()
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid in (0, 1):
            out[int(pid)] = comm
    return out


def serial(vm):
    with open(os.path.join(str(vm.vmdir), "serial.log"), errors="replace") as f:
        return f.read()


def gone_or_late(vm, group):
    """After a killing EXIT: the exec's group is gone, or the session waited its 20 s for it to
    empty in vain and said so (the agent removes it later)."""
    if not exists(vm, CG + group):
        return True
    n = group.rsplit("-", 1)[1]
    assert f"exec {n}: its cgroup is not empty" in serial(vm), f"{group} left behind"
    wait_for(lambda: not exists(vm, CG + group), SLOW, f"the agent to remove {group}")
    return True


def wait_saturated(vm, group, timeout=SLOW):
    """Until a fork in the exec group was refused for its task limit, or the workload's memory
    limit made the OOM killer kill."""
    wait_for(lambda: field(vm, CG + group + "/pids.events", "max") > 0 or
             field(vm, WL + "/memory.events", "oom_kill") > 0, timeout,
             f"{group} to reach its pids.max or the workload its memory.max")
    return num(vm, CG + group + "/pids.peak")


# ---- layout ----

def test_exec_runs_in_its_own_workload_cgroup(vm):
    r, flags, _ = run(vm, ["sh", "-c", "cat /proc/self/cgroup /proc/1/cgroup "
                           "/proc/self/oom_score_adj /proc/1/oom_score_adj"])
    assert r.code == 0 and flags == 0, r
    me, init, adj_me, adj_init = r.stdout.decode().split()
    assert me.startswith("0::/workload/exec-"), me
    assert init == "0::/capsem"
    assert (adj_me, adj_init) == ("0", "-1000")
    assert num(vm, WL + "/pids.max") > 256
    assert num(vm, WL + "/memory.max") < 768 << 20
    assert "pids" in cat(vm, WL + "/cgroup.subtree_control")
    # the exec's group is removed when the exec has left nothing behind
    assert not exists(vm, WL + me[len("0::/workload"):])


def test_doctor_checks_the_workload_cgroup(vm):
    r, _, _ = run(vm, ["capsem-doctor"])
    line = [ln for ln in r.stdout.decode().splitlines() if ln.startswith("workload")]
    assert line and " pass " in line[0] and "/workload/exec-" in line[0], r.stdout.decode()


# ---- (a) a fork bomb with a timeout ----

def test_fork_bomb_with_timeout_is_killed_and_exec_keeps_working(vm):
    res = {}

    def bomb():
        res["r"] = run(vm, ["sh", "-c", SELF_CG + BOMB + "; exec sleep 1000"], timeout_ms=30000)
        res["end"] = time.monotonic()

    t = threading.Thread(target=bomb)
    t.start()
    # execs keep working while the bomb runs; the agent must be able to fork for each
    lat = []
    while t.is_alive():
        r, _, dt = run(vm, ["cat", WL + "/pids.current"])
        assert r.kind == cc.EXIT_CODE and r.code == 0, r
        lat.append(dt)
    t.join()
    r, _, took = res["r"]
    assert r.kind == cc.EXIT_TIMEOUT and r.status == 124, r
    group = r.stdout.decode().split()[0]
    assert group.startswith("/workload/exec-"), r
    # EXIT came once the whole group was gone: it is removed, nothing of it is left (unless it
    # took the guest longer than the agent waits, which it says on the console)
    r2, _, next_exec = run(vm, ["cat", WL + "/pids.current"])
    assert r2.code == 0
    after = time.monotonic() - res["end"]
    assert gone_or_late(vm, group)
    wait_for(lambda: num(vm, WL + "/pids.current") <= 1, 120, "the bomb's tasks to be reaped")
    ps = cat(vm, "/proc/loadavg")
    print(f"\nbomb with 30 s timeout: EXIT after {took:.1f} s; execs during it: {len(lat)}, "
          f"max {max(lat, default=0):.1f} s; next exec {next_exec:.2f} s ({after:.2f} s after "
          f"EXIT), then pids.current {r2.stdout.decode().strip()}; loadavg {ps.strip()}")


def test_timed_exec_that_exits_at_once_takes_its_bomb_with_it(vm):
    # the shape: the command backgrounds the bomb and exits 0 at once
    r, _, took = run(vm, ["sh", "-c", SELF_CG + BOMB], timeout_ms=40000)
    assert r.kind == cc.EXIT_CODE and r.code == 0, r
    group = r.stdout.decode().split()[0]
    assert gone_or_late(vm, group)
    wait_for(lambda: num(vm, WL + "/pids.current") <= 1, 120, "the bomb's tasks to be reaped")
    print(f"\nbackgrounded bomb with a timeout: EXIT after {took:.1f} s, group gone")


def test_timed_exec_kills_setsid_daemons(vm):
    r, _, _ = run(vm, ["sh", "-c", "setsid sleep 300 & echo $!"], timeout_ms=60000)
    assert r.code == 0, r
    pid = r.stdout.decode().strip()
    assert not exists(vm, f"/proc/{pid}"), "a setsid'ed child of a timed exec survived"


def test_untimed_exec_leaves_background_processes_running(vm):
    # like docker exec: `sh -c 'server &'` starts a server that stays
    r, _, _ = run(vm, ["sh", "-c", SELF_CG + "setsid sleep 300 >/dev/null 2>&1 & echo $!"])
    assert r.code == 0, r
    group, pid = r.stdout.decode().split()
    assert exists(vm, f"/proc/{pid}")
    assert cat(vm, f"/proc/{pid}/cgroup").strip() == "0::" + group
    # killing it empties the group, which the agent then removes
    r, _, _ = run(vm, ["sh", "-c", f"echo 1 > {CG}{group}/cgroup.kill"])
    assert r.code == 0, r
    wait_for(lambda: not exists(vm, CG + group), 120, "the agent to remove the emptied group")


def test_disconnect_kills_the_whole_cgroup(vm):
    s = cc.connect(vm.vsock)
    s.sendall(cc.frame(cc.EXEC, cc.exec_payload(
        ["sh", "-c", SELF_CG + "setsid sleep 300 & echo $!; exec sleep 301"])))
    s.settimeout(SLOW)
    buf, out = b"", b""
    while out.count(b"\n") < 2:
        d = s.recv(65536)
        assert d, out
        buf += d
        while len(buf) >= 6 and len(buf) >= 6 + struct.unpack(">I", buf[:4])[0]:
            n, t = struct.unpack(">IH", buf[:6])
            if t == cc.STDOUT:
                out += buf[6:6 + n]
            buf = buf[6 + n:]
    s.close()  # the host goes away mid-exec
    group, pid = out.decode().split()[:2]
    wait_for(lambda: not exists(vm, CG + group), 120, "the disconnected exec's group to go")
    assert not exists(vm, f"/proc/{pid}")


# ---- (c) memory ----

def test_memory_hog_is_oom_killed_in_the_workload_and_reported(vm):
    before = system_procs(vm)
    r, flags, took = run(vm, ["sh", "-c", HOG])
    assert (r.kind, r.code, r.status) == (cc.EXIT_SIGNAL, 9, 137), r
    assert flags & EXIT_OOM, (r, flags)
    assert b"capsem: out of memory" in r.stderr, r
    # the agent survived (this exec works), nothing on the system side was touched
    assert system_procs(vm) == before
    assert field(vm, CG + "/capsem/memory.events", "oom_kill") == 0
    assert field(vm, WL + "/memory.events", "oom_kill") > 0
    r2, flags2, _ = run(vm, ["echo", "ok"])
    assert r2.stdout == b"ok\n" and flags2 == 0, r2
    # the host's ledger says so too (EXIT's flag, recorded by capsem-vm)
    wait_for(lambda: any(HOG in row[0] for row in oom_rows(vm)), 60, "the OOM row")
    print(f"\nmemory hog OOM-killed after {took:.1f} s")


def test_memory_and_swap_hog_stops_at_the_swap_limit(tmp_path_factory):
    # swap on the VM's disk; the workload may use memory.swap.max of it and no more (the limits
    # are shrunk so that the test swaps 96 MiB rather than 600 under TCG)
    disk = tmp_path_factory.mktemp("swapdisk") / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(512 << 20)
    subprocess.run([MKFS, "-q", "-F", str(disk)], check=True, capture_output=True)
    v = boot(tmp_path_factory, "--disk", str(disk))
    try:
        # capsem-init swaps to the disk's own swapfile (sized to the disk's free space): the
        # test puts its own, bigger one in its place
        sw = "/mnt/capsem-disk/testswap"
        r, _, _ = run(v, ["sh", "-c", "swapoff /mnt/capsem-disk/swapfile && "
                          f"dd if=/dev/zero of={sw} bs=1M count=256 2>/dev/null && "
                          f"chmod 600 {sw} && mkswap {sw} >/dev/null && swapon {sw} && "
                          # the dd's dirty page cache is written back and dropped first: under
                          # TCG a reclaim stuck behind slow writeback ends in the OOM killer
                          # before anything is swapped
                          "sync && echo 3 > /proc/sys/vm/drop_caches && "
                          f"echo 192M > {WL}/memory.max && echo 96M > {WL}/memory.swap.max"])
        assert r.code == 0, r
        before = system_procs(v)
        r, flags, took = run(v, ["sh", "-c", HOG])
        assert (r.kind, r.code) == (cc.EXIT_SIGNAL, 9) and flags & EXIT_OOM, (r, flags)
        assert b"capsem: out of memory" in r.stderr, r
        # what stopped it was its swap limit, not the end of the swap device
        assert field(v, WL + "/memory.swap.events", "max") > 0, (
            cat(v, "/proc/swaps"), cat(v, WL + "/memory.swap.events"),
            cat(v, WL + "/memory.swap.max"), cat(v, WL + "/memory.max"),
            cat(v, WL + "/memory.swap.current"))
        meminfo = cat(v, "/proc/meminfo")
        free = int(meminfo.split("SwapFree:")[1].split()[0])
        assert free > 100 << 10, meminfo
        assert system_procs(v) == before
        assert field(v, CG + "/capsem/memory.events", "oom_kill") == 0
        print(f"\nmemory + swap hog OOM-killed at its swap limit after {took:.1f} s")
    finally:
        assert v.stop() == 0


def test_interactive_shell_survives_its_memory_hog(vm):
    # a TTY exec (capsem shell): the OOM killer takes the hog, not the shell
    r, flags, _ = run(vm, ["sh", "-c", f"({HOG}); echo survived=$?"], flags=cc.EXEC_TTY)
    assert r.kind == cc.EXIT_CODE and r.code == 0, r
    assert b"survived=137" in r.stdout, r
    assert flags & EXIT_OOM and b"capsem: out of memory" in r.stdout, (r, flags)


# ---- (b) and (d): a saturated guest ----

def test_background_fork_bomb_does_not_stop_exec(fresh):
    r, _, _ = run(fresh, ["sh", "-c", SELF_CG + BOMB])
    assert r.kind == cc.EXIT_CODE and r.code == 0, r
    group = r.stdout.decode().split()[0]
    peak = wait_saturated(fresh, group)
    t0 = time.monotonic()
    for argv, flags in ((["echo", "pipe-ok"], 0), (["echo", "tty-ok"], cc.EXEC_TTY),
                        (["cat", WL + "/pids.current"], 0)):
        r, oom, dt = run(fresh, argv, flags=flags)
        # served: it ran (or, should the bomb have run the workload out of memory meanwhile, the
        # OOM killer may have picked it, which EXIT says)
        assert (r.kind, r.code) == (cc.EXIT_CODE, 0) or oom & EXIT_OOM, r
        print(f"\nbomb at {peak} tasks: {argv[0]} {'tty' if flags else 'pipe'} exec {dt:.1f} s")
    # the bomb's exec cannot take the share of tasks kept for the others: a shell can still fork
    r, oom, dt = run(fresh, ["sh", "-c", "/bin/true && echo forked"], flags=cc.EXEC_TTY)
    assert (r.kind, r.code) == (cc.EXIT_CODE, 0) and b"forked" in r.stdout or oom & EXIT_OOM, r
    print(f"a shell's fork next to the bomb: {dt:.1f} s")
    # an exec without a timeout leaves its background processes (here: the bomb) running, unless
    # the bomb met the memory limit first (the OOM killer took all of it: memory.oom.group) or
    # burned out (its processes exit once their forks fail at the task limit)
    if exists(fresh, CG + group):
        # the way to stop them
        r, _, _ = run(fresh, ["sh", "-c", f"echo 1 > {CG}{group}/cgroup.kill"])
        assert r.code == 0, r
    else:
        ooms = field(fresh, WL + "/memory.events", "oom_group_kill")
        print(f"the bomb was gone already ({'OOM group kill' if ooms else 'burned out'})")
    wait_for(lambda: not exists(fresh, CG + group), SLOW, "the agent to remove the bomb's group")
    print(f"bomb stopped and its group removed {time.monotonic() - t0:.1f} s later")


def test_stop_works_on_a_saturated_guest(fresh):
    # memory: most of the workload's share pinned in /tmp (tmpfs pages are charged to it and no
    # OOM kill frees them); tasks: a bomb from a TTY exec, whose group has no memory.oom.group
    # (the OOM killer takes single bomb processes and the rest go on), deaf to the hangup its
    # shell's exit sends
    r, _, _ = run(fresh, ["dd", "if=/dev/zero", "of=/tmp/fill", "bs=1M", "count=360"])
    assert r.code == 0, r
    r, _, _ = run(fresh, ["sh", "-c", "trap '' HUP; " + SELF_CG + BOMB], flags=cc.EXEC_TTY)
    assert r.kind == cc.EXIT_CODE and r.code == 0, r
    wait_saturated(fresh, r.stdout.decode().split()[0])
    t0 = time.monotonic()
    assert fresh.stop() == 0
    took = time.monotonic() - t0
    log = serial(fresh)
    # the agent took SHUTDOWN and init began its power-off (not only QEMU stopped from outside,
    # which would work on a dead guest too); whether it finished within capsem-vm's grace
    # period is a matter of time, printed
    assert "capsem-agent: shutdown requested" in log, log[-2000:]
    assert "capsem-init: powering off" in log, log[-2000:]
    done = "reboot: Restarting system" in log
    print(f"\nstop of a saturated guest: {took:.1f} s, "
          f"{'powered off by the guest' if done else 'ended by capsem-vm after its grace period'}")


# ---- without cgroups ----

def test_no_cgroups_degrades_to_process_groups(tmp_path_factory):
    v = boot(tmp_path_factory, "--append", "cgroup_disable=memory")
    try:
        r, _, _ = run(v, ["cat", "/proc/self/cgroup"])
        assert r.code == 0 and not r.stdout.startswith(b"0::/workload"), r
        r, _, _ = run(v, ["sh", "-c", "sleep 300 & echo $!; exec sleep 301"], timeout_ms=1000)
        assert r.status == 124, r
        assert not exists(v, f"/proc/{r.stdout.decode().strip()}")
        r, _, _ = run(v, ["capsem-doctor"])
        assert any(ln.startswith("workload") and " FAIL " in ln
                   for ln in r.stdout.decode().splitlines()), r
        log = serial(v)
        assert log.count("no cgroup limits for the workload") == 1, log[-3000:]
        assert log.count("no workload cgroup: exec commands run without limits") == 1, log[-3000:]
    finally:
        assert v.stop() == 0
