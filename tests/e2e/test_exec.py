"""Exec semantics inside one real microVM (booted once for the module): exit codes, signals,
stdout/stderr, stdin, binary-safe streams, concurrency, timeouts, env and cwd."""
import hashlib
import os
import struct
import threading

import pytest

import capsem_client as cc


def test_hello_reports_boot_stages(vm):
    r = vm.ready
    assert r["kernel_release"].endswith("-capsem")
    names = [s["name"] for s in r["stages"]]
    assert "agent_ready" in names
    assert r["boot_ms"] > 0
    assert r["accel"] in ("tcg", "kvm")


@pytest.mark.parametrize("code", [0, 1, 7, 255])
def test_exit_codes(vm, code):
    r = cc.sh(vm.vsock, f"exit {code}")
    assert (r.kind, r.code) == (cc.EXIT_CODE, code), r


@pytest.mark.parametrize("sig", [9, 15])
def test_killed_by_signal(vm, sig):
    r = cc.sh(vm.vsock, f"kill -{sig} $$")
    assert (r.kind, r.code, r.status) == (cc.EXIT_SIGNAL, sig, 128 + sig), r


def test_signal_forwarded_to_command(vm):
    def started(sock, res):
        sock.sendall(cc.frame(cc.SIGNAL, struct.pack(">I", 2)))
    r = cc.run(vm.vsock, ["sleep", "60"], stdin=None, on_started=started)
    assert (r.kind, r.code) == (cc.EXIT_SIGNAL, 2), r


def test_stdout_stderr_separate(vm):
    r = cc.sh(vm.vsock, "echo out; echo err >&2; echo out2; exit 3")
    assert r.stdout == b"out\nout2\n"
    assert r.stderr == b"err\n"
    assert r.code == 3


def test_stdin_reaches_command(vm):
    r = cc.run(vm.vsock, ["cat"], stdin=b"hello\n")
    assert r.stdout == b"hello\n" and r.code == 0, r


def test_binary_safe_both_ways(vm):
    data = bytes(range(256)) * 1024
    r = cc.run(vm.vsock, ["cat"], stdin=data)
    assert r.stdout == data and r.code == 0


def test_64mib_stream_checksum(vm):
    # the guest makes 64 MiB of random bytes, reports their sha256, then streams them out
    r = cc.sh(vm.vsock, "head -c 67108864 /dev/urandom > /tmp/blob && sha256sum /tmp/blob >&2 "
              "&& cat /tmp/blob && rm /tmp/blob", io_timeout=600)
    assert r.code == 0, r.stderr
    assert len(r.stdout) == 64 << 20
    assert hashlib.sha256(r.stdout).hexdigest() == r.stderr.split()[0].decode()


def test_stdin_and_stdout_saturated_together(vm):
    data = os.urandom(8 << 20)
    r = cc.run(vm.vsock, ["cat"], stdin=data, io_timeout=600)
    assert r.code == 0 and hashlib.sha256(r.stdout).digest() == hashlib.sha256(data).digest()


def test_eight_concurrent_execs(vm):
    # each exec waits until all 8 have started: only possible if they run at the same time
    cc.sh(vm.vsock, "rm -rf /tmp/conc && mkdir /tmp/conc")
    results = [None] * 8

    def one(i):
        results[i] = cc.sh(vm.vsock, f"touch /tmp/conc/{i}; n=0; "
                           "while [ $(ls /tmp/conc | wc -l) -lt 8 ]; do "
                           f"sleep 0.1; n=$((n+1)); [ $n -gt 1200 ] && exit 99; done; echo done-{i}",
                           io_timeout=300)
    ts = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for i, r in enumerate(results):
        assert r is not None and r.code == 0 and r.stdout == f"done-{i}\n".encode(), r


def test_timeout_kills_process_group(vm):
    r = cc.sh(vm.vsock, "sleep 300 & echo bg=$!; sleep 301", timeout_ms=1000)
    assert r.kind == cc.EXIT_TIMEOUT and r.status == 124, r
    bg = r.stdout.decode().strip().split("=")[1]
    # the background child was in the same process group: it must be gone too
    chk = cc.sh(vm.vsock, f"kill -0 {bg} 2>/dev/null && echo alive || echo gone")
    assert chk.stdout == b"gone\n"


def test_env_and_cwd(vm):
    r = cc.run(vm.vsock, ["sh", "-c", 'echo "$FOO|$BAR|$(pwd)|$HOME"'], env=["FOO=1", "BAR=a b=c"],
               cwd="/tmp")
    assert r.stdout == b"1|a b=c|/tmp|/root\n", r


def test_missing_command_is_127(vm):
    r = cc.run(vm.vsock, ["/no/such/thing"])
    assert r.code == 127, r
    assert b"no/such/thing" in r.stderr


def test_refused_port_is_immediate(vm):
    with pytest.raises(ConnectionRefusedError):
        cc.connect(vm.vsock, port=4999, timeout=30)


def test_tty_exec(vm):
    r = cc.run(vm.vsock, ["tty"], flags=cc.EXEC_TTY)
    assert r.stdout.strip().startswith(b"/dev/pts/"), r
