"""capsem-agent's exec sessions and control channel, driven on the host without a VM.

The agent's host build (capsem-agent-host, glibc) runs the exact session code the guest runs, but
serves exec connections on a Unix socket (--listen-unix PATH) and connects its control channel to
a Unix socket (--control-unix PATH) or not at all (--no-control). Frames are
u32 BE length | u16 BE type | payload (docs/PROTOCOL.md). This file builds nothing: it takes the
binary from $CAPSEM_AGENT_HOST_BIN and is skipped when that is unset.
"""
import hashlib
import os
import select
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

AGENT = os.environ.get("CAPSEM_AGENT_HOST_BIN")
pytestmark = pytest.mark.skipif(
    not AGENT, reason="set CAPSEM_AGENT_HOST_BIN to the host build of the agent "
    "(e.g. build/src/guest/capsem-agent-host)")

from capsem_client import (BOOT_CONFIG, ERROR, EXEC, EXEC_SHELL, EXEC_TTY, EXIT,  # noqa: F401
                            EXIT_CODE, EXIT_SIGNAL, EXIT_TIMEOUT, HELLO, SHUTDOWN, SIGNAL,
                            STARTED, STDERR, STDIN, STDOUT, WINSIZE, _s, exec_payload, frame)
from conftest import wait_for  # noqa: E402

MAX_PAYLOAD = 1 << 20


class Result:
    def __init__(self):
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.out_len = 0
        self.out_sha = hashlib.sha256()
        self.kind = self.code = self.pid = None
        self.wall_us = self.utime_us = self.stime_us = self.maxrss_kb = None
        self.error = None  # (errno, message)
        self.closed = False  # the agent closed the connection after the last frame

    def __repr__(self):
        return (f"Result(kind={self.kind}, code={self.code}, error={self.error}, "
                f"stdout={bytes(self.stdout[:300])!r}, stderr={bytes(self.stderr[:300])!r})")


def parse_frames(buf):
    """Yield (type, payload) for each whole frame at the front of buf and remove them."""
    while len(buf) >= 6:
        ln, t = struct.unpack(">IH", buf[:6])
        assert ln <= MAX_PAYLOAD, f"agent sent an oversized frame ({ln})"
        if len(buf) < 6 + ln:
            return
        pl = bytes(buf[6:6 + ln])
        del buf[:6 + ln]
        yield t, pl


def run_raw(sock_path, first, stdin_chunks=(), close_stdin=True, keep_stdout=True,
            io_timeout=60, on_started=None):
    """Send the bytes `first` (normally one EXEC frame), then stream stdin_chunks as STDIN frames
    while reading the agent's frames, until EXIT or ERROR and the agent's close."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    s.setblocking(False)
    out = bytearray(first)
    chunks = iter(stdin_chunks)
    more_stdin = True
    res = Result()
    buf = bytearray()
    deadline = time.monotonic() + io_timeout
    try:
        while not res.closed:
            if more_stdin and len(out) < (1 << 20):
                c = next(chunks, None)
                if c is None:
                    more_stdin = False
                    if close_stdin:
                        out += frame(STDIN)
                else:
                    out += frame(STDIN, c)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no EXIT within {io_timeout} s: {res!r}")
            r, w, _ = select.select([s], [s] if out else [], [], min(left, 0.5))
            if w:
                try:
                    n = s.send(out)
                    del out[:n]
                except (BrokenPipeError, ConnectionResetError):
                    out.clear()
                    more_stdin = False
            if r:
                try:
                    d = s.recv(1 << 20)
                except ConnectionResetError:
                    d = b""
                if not d:
                    res.closed = True
                buf += d
                for t, pl in parse_frames(buf):
                    assert res.kind is None and res.error is None, "frame after EXIT/ERROR"
                    if t == STDOUT:
                        res.out_len += len(pl)
                        res.out_sha.update(pl)
                        if keep_stdout:
                            res.stdout += pl
                    elif t == STDERR:
                        res.stderr += pl
                    elif t == STARTED:
                        (res.pid,) = struct.unpack(">I", pl)
                        if on_started:
                            on_started(s, res)
                    elif t == EXIT:
                        (res.kind, res.code, res.wall_us, res.utime_us, res.stime_us,
                         res.maxrss_kb) = struct.unpack(">BiQQQQ", pl)
                        more_stdin = False
                        out.clear()
                    elif t == ERROR:
                        code, n = struct.unpack(">iI", pl[:8])
                        res.error = (code, pl[8:8 + n].decode())
                    else:
                        raise AssertionError(f"unexpected frame type {t}")
        assert not buf, "trailing bytes after the last frame"
    finally:
        s.close()
    return res


def run(sock_path, argv, stdin=b"", env=(), cwd=None, flags=0, timeout_ms=0, rows=24, cols=80,
        **kw):
    chunks = [stdin[i:i + 65536] for i in range(0, len(stdin), 65536)] if stdin else []
    return run_raw(sock_path, frame(EXEC, exec_payload(argv, env, cwd, flags, timeout_ms, rows,
                                                       cols)), chunks, **kw)


def sh(sock_path, script, **kw):
    return run(sock_path, [script], flags=EXEC_SHELL | kw.pop("flags", 0), **kw)


def start_agent(tmp, *args):
    sock = os.path.join(tmp, "exec.sock")
    p = subprocess.Popen([AGENT, "--listen-unix", sock, *args], stderr=subprocess.PIPE)
    try:
        wait_for(lambda: os.path.exists(sock) or p.poll() is not None, 10,
                 "the agent's socket")
    except AssertionError:
        pass
    if not os.path.exists(sock):
        p.kill()
        raise RuntimeError("agent did not start: " + p.stderr.read().decode())
    return p, sock


def stop_agent(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        p.wait(10)


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("agent"))
    p, sock = start_agent(tmp, "--no-control")
    yield sock
    stop_agent(p)


def alive(pid):
    """True when pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # ENOENT, or ESRCH when it dies while we read
        return False


def wait_dead(pid, timeout=5):
    try:
        return wait_for(lambda: not alive(pid), timeout, f"{pid} to die")
    except AssertionError:
        return False


# ---- exit status ----

@pytest.mark.parametrize("code", [0, 1, 7, 255])
def test_exit_codes(agent, code):
    r = sh(agent, f"exit {code}")
    assert (r.kind, r.code) == (EXIT_CODE, code), r
    assert r.closed and r.pid > 0
    assert r.wall_us > 0


@pytest.mark.parametrize("sig", [9, 15])
def test_killed_by_signal(agent, sig):
    r = sh(agent, f"kill -{sig} $$")
    assert (r.kind, r.code) == (EXIT_SIGNAL, sig), r


def test_signal_frame_reaches_the_group(agent):
    def started(sock, res):
        sock.sendall(frame(SIGNAL, struct.pack(">I", 2)))
    r = run(agent, ["sleep", "60"], close_stdin=False, on_started=started, io_timeout=10)
    assert (r.kind, r.code) == (EXIT_SIGNAL, 2), r


def test_out_of_range_signal_is_ignored(agent):
    def started(sock, res):
        sock.sendall(frame(SIGNAL, struct.pack(">I", 0)) + frame(SIGNAL, struct.pack(">I", 65))
                     + frame(STDIN, b"x\n") + frame(STDIN))
    r = run_raw(agent, frame(EXEC, exec_payload(["sh", "-c", "read x; echo got-$x"])),
                close_stdin=False, on_started=started)
    assert (r.kind, r.code, bytes(r.stdout)) == (EXIT_CODE, 0, b"got-x\n"), r


def test_missing_command_is_127(agent):
    r = run(agent, ["/no/such/thing"])
    assert (r.kind, r.code) == (EXIT_CODE, 127), r
    assert r.stderr == b"capsem: /no/such/thing: No such file or directory\n"


def test_not_executable_is_126(agent, tmp_path):
    f = tmp_path / "script"
    f.write_text("#!/bin/sh\necho hi\n")
    f.chmod(0o644)
    r = run(agent, [str(f)])
    assert (r.kind, r.code) == (EXIT_CODE, 126), r
    assert b"Permission denied" in r.stderr


def test_bad_cwd_is_126(agent):
    r = run(agent, ["true"], cwd="/no/such/dir")
    assert (r.kind, r.code) == (EXIT_CODE, 126), r
    assert r.stderr.startswith(b"capsem: cd: /no/such/dir:")


# ---- streams ----

def test_stdout_stderr_separate(agent):
    r = sh(agent, "echo out; echo err >&2; echo out2; exit 3")
    assert (bytes(r.stdout), bytes(r.stderr), r.code) == (b"out\nout2\n", b"err\n", 3), r


def test_stdin_through_cat(agent):
    r = run(agent, ["cat"], stdin=b"hello\n")
    assert (bytes(r.stdout), r.code) == (b"hello\n", 0), r


def test_empty_stdin_frame_closes_stdin(agent):
    r = run(agent, ["wc", "-c"], stdin=b"x" * 100000)
    assert (r.stdout.strip(), r.code) == (b"100000", 0), r


def test_binary_safe(agent):
    data = bytes(range(256)) * 4096
    r = run(agent, ["cat"], stdin=data)
    assert bytes(r.stdout) == data and r.code == 0


def test_64mib_through_cat(agent):
    """stdin and stdout saturated at once: needs non-blocking, bounded buffers both ways."""
    total = 64 << 20
    seed = os.urandom(1 << 20)
    h = hashlib.sha256()
    chunks = []
    for i in range(total // len(seed)):
        c = seed[i:] + seed[:i]  # 64 distinct MiB without holding 64 random MiB twice
        h.update(c)
        chunks.append(c)
    t0 = time.monotonic()
    r = run_raw(agent, frame(EXEC, exec_payload(["cat"])),
                (c[j:j + 65536] for c in chunks for j in range(0, len(c), 65536)),
                keep_stdout=False, io_timeout=300)
    took = time.monotonic() - t0
    assert (r.kind, r.code) == (EXIT_CODE, 0), r
    assert r.out_len == total
    assert r.out_sha.hexdigest() == h.hexdigest()
    print(f"64 MiB through cat in {took:.2f} s ({total / took / 1e6:.0f} MB/s)")


def test_large_output_after_exit_is_drained(agent):
    # the child writes more than the pipe holds and exits; all of it must arrive before EXIT
    r = sh(agent, "head -c 3000000 /dev/zero; exit 5")
    assert (r.kind, r.code, len(r.stdout)) == (EXIT_CODE, 5, 3000000), r


def test_background_child_does_not_delay_exit(agent):
    t0 = time.monotonic()
    r = sh(agent, "sleep 30 & echo bg=$!")
    took = time.monotonic() - t0
    assert (r.kind, r.code) == (EXIT_CODE, 0), r
    assert took < 5, f"EXIT waited for a background process ({took:.1f} s)"
    bg = int(r.stdout.decode().strip().split("=")[1])
    os.kill(bg, signal.SIGKILL)


# ---- concurrency, timeout, disconnect ----

def test_eight_concurrent_sessions(agent, tmp_path):
    # each session waits until all 8 have started: only possible if they run at the same time
    d = tmp_path / "conc"
    d.mkdir()
    results = [None] * 8

    def one(i):
        results[i] = sh(agent, f"touch {d}/{i}; n=0; "
                        f"while [ $(ls {d} | wc -l) -lt 8 ]; do "
                        "sleep 0.05; n=$((n+1)); [ $n -gt 400 ] && exit 99; done; echo done-" +
                        str(i), io_timeout=60)
    ts = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for i, r in enumerate(results):
        assert r is not None and r.code == 0 and bytes(r.stdout) == f"done-{i}\n".encode(), r


def test_timeout_kills_the_process_group(agent):
    t0 = time.monotonic()
    r = sh(agent, "sleep 60 & echo bg=$!; sleep 60", timeout_ms=1000, io_timeout=20)
    took = time.monotonic() - t0
    assert (r.kind, r.code) == (EXIT_TIMEOUT, 9), r
    assert 0.9 < took < 4, took
    bg = int(r.stdout.decode().strip().split("=")[1])
    assert wait_dead(bg), "the background sleep survived the timeout"


def test_host_disconnect_kills_the_process_group(agent):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(agent)
    s.sendall(frame(EXEC, exec_payload(["sleep 60 & echo $!; sleep 61"], flags=EXEC_SHELL)))
    buf = bytearray()
    pids = []
    s.settimeout(10)
    while len(pids) < 2:
        d = s.recv(65536)
        assert d, "agent closed early"
        buf += d
        for t, pl in parse_frames(buf):
            if t == STARTED:
                pids.append(struct.unpack(">I", pl)[0])
            elif t == STDOUT:
                pids.append(int(pl.strip()))
    s.close()
    for pid in pids:
        assert wait_dead(pid), f"process {pid} survived the host's disconnect"


# ---- tty ----

def test_tty(agent):
    r = run(agent, ["tty"], flags=EXEC_TTY)
    assert r.code == 0 and r.stdout.startswith(b"/dev/pts/"), r
    assert r.stderr == b""


def test_tty_env_and_winsize(agent):
    r = run(agent, ["sh", "-c", 'echo "$TERM"; stty size'], flags=EXEC_TTY, rows=30, cols=100)
    assert r.code == 0 and bytes(r.stdout).split() == [b"xterm-256color", b"30", b"100"], r


def test_tty_winsize_frame(agent):
    def started(sock, res):
        sock.sendall(frame(WINSIZE, struct.pack(">HH", 40, 120)) + frame(STDIN, b"go\n"))
    r = run(agent, ["sh", "-c", "read x; stty size"], flags=EXEC_TTY, close_stdin=False,
            on_started=started)
    assert r.code == 0 and b"40 120" in r.stdout, r


def test_tty_stdin_eof_is_ctrl_d(agent):
    r = run(agent, ["cat"], stdin=b"abc\n", flags=EXEC_TTY)
    assert r.code == 0 and b"abc" in r.stdout, r


# ---- environment ----

def test_env_and_cwd(agent):
    r = run(agent, ["sh", "-c", 'echo "$FOO|$BAR|$(pwd)|$HOME|$TERM"'],
            env=["FOO=1", "BAR=a b=c"], cwd="/tmp")
    assert bytes(r.stdout) == b"1|a b=c|/tmp|/root|\n", r


def test_env_overrides_defaults(agent):
    r = run(agent, ["sh", "-c", 'echo "$HOME|$PATH"'], env=["HOME=/tmp", "PATH=/bin:/usr/bin"])
    assert bytes(r.stdout) == b"/tmp|/bin:/usr/bin\n", r


def test_agent_environment_does_not_leak(agent):
    r = run(agent, ["env"])
    keys = sorted(line.split(b"=", 1)[0] for line in r.stdout.splitlines())
    assert keys == sorted([b"HOME", b"LANG", b"LOGNAME", b"PATH", b"SHELL", b"USER"]), r


def test_shell_extra_args_are_positional(agent):
    r = run(agent, ['echo "$0:$1:$2"', "a", "b c"], flags=EXEC_SHELL)
    assert bytes(r.stdout) == b"sh:a:b c\n", r


# ---- hostile input ----

def test_bad_flags_rejected(agent):
    r = run_raw(agent, frame(EXEC, exec_payload(["true"], flags=0x80)))
    assert r.error and r.error[0] == 74 and r.kind is None, r  # EBADMSG


def test_zero_argc_rejected(agent):
    p = struct.pack(">IIHHB", 0, 0, 24, 80, 0) + struct.pack(">I", 0) + struct.pack(">I", 0)
    r = run_raw(agent, frame(EXEC, p))
    assert r.error and r.error[0] == 74, r


def test_truncated_exec_rejected(agent):
    r = run_raw(agent, frame(EXEC, exec_payload(["true"])[:-3]))
    assert r.error and r.error[0] == 74, r


def test_first_frame_must_be_exec(agent):
    r = run_raw(agent, frame(STDIN, b"hi"))
    assert r.error and r.error[0] == 71, r  # EPROTO


def test_oversized_frame_rejected(agent):
    r = run_raw(agent, struct.pack(">IH", MAX_PAYLOAD + 1, EXEC))
    assert r.error and r.error[0] == 90, r  # EMSGSIZE


def test_garbage_mid_session_kills_the_command(agent):
    def started(sock, res):
        sock.sendall(frame(SIGNAL, b"\x00\x01"))  # a SIGNAL payload must be 4 bytes
    r = run(agent, ["sleep", "60"], close_stdin=False, on_started=started, io_timeout=10)
    assert r.kind is None and r.closed, r
    assert wait_dead(r.pid)


def test_agent_survives_everything_above(agent):
    r = sh(agent, "echo still-here")
    assert bytes(r.stdout) == b"still-here\n", r


# ---- control channel ----

def test_control_hello_boot_config_shutdown(tmp_path):
    ctl_path = str(tmp_path / "control.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(ctl_path)
    srv.listen(1)
    srv.settimeout(10)
    p, sock = start_agent(str(tmp_path), "--control-unix", ctl_path,
                          "--boot-stages", "init_start=1000,mount_proc=1500")
    try:
        c, _ = srv.accept()
        c.settimeout(10)
        buf = bytearray()
        frames = []
        while not frames:
            d = c.recv(65536)
            assert d
            buf += d
            frames = list(parse_frames(buf))
        t, pl = frames[0]
        assert t == HELLO
        version, = struct.unpack(">H", pl[:2])
        assert version == 1
        off = 2
        strs = []
        for _ in range(2):
            (n,) = struct.unpack(">I", pl[off:off + 4])
            strs.append(pl[off + 4:off + 4 + n].decode())
            off += 4 + n
        assert strs[1] == os.uname().release
        (nst,) = struct.unpack(">I", pl[off:off + 4])
        off += 4
        stages = []
        for _ in range(nst):
            (n,) = struct.unpack(">I", pl[off:off + 4])
            name = pl[off + 4:off + 4 + n].decode()
            (us,) = struct.unpack(">Q", pl[off + 4 + n:off + 12 + n])
            stages.append((name, us))
            off += 12 + n
        assert off == len(pl)
        names = [s[0] for s in stages]
        assert names == ["init_start", "mount_proc", "agent_start", "agent_ready"], stages
        assert stages[0][1] == 1000 and stages[2][1] <= stages[3][1]

        # exec works while the control channel is up
        r = sh(sock, "echo ok")
        assert bytes(r.stdout) == b"ok\n"

        # boot config is only logged outside a guest; SHUTDOWN makes the host build exit
        bc = struct.pack(">Q", 1700000000 * 10**9) + _s("capsem-test")
        c.sendall(frame(BOOT_CONFIG, bc) + frame(SHUTDOWN))
        assert p.wait(10) == 0
        err = p.stderr.read().decode()
        assert "hostname capsem-test (not applied" in err, err
        c.close()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        srv.close()
