"""The channel mux over virtio-serial (issue "fork/suspend": the transport a migratable VM needs;
docs/PROTOCOL.md §10): a daemon with CAPSEM_CHANNEL=serial runs its VMs without the vhost-user
vsock device, and everything above capsem-vm works unchanged: exec (with stdin and exit status),
a large stream both ways intact, the exec's ledger row, the MCP relay (capsem-snapshots goes
through it), DNS through the guest's proxy. Then the same measurements with vsock in the same
run: exec round trip and stream throughput, printed as ratios.
"""
import hashlib
import json
import os
import statistics
import subprocess
import time

import pytest

from conftest import CAPSEM, IMAGES, wait_for
from test_cli_daemon import clean_home


def cli(home, channel, *args, input=b"", timeout=300, check=None):
    env = dict(os.environ, CAPSEM_HOME=str(home), CAPSEM_IMAGES_DIR=IMAGES,
               CAPSEM_CHANNEL=channel)
    env.pop("CAPSEM_NO_DAEMON", None)
    p = subprocess.run([CAPSEM, *args], input=input, capture_output=True, env=env,
                       timeout=timeout)
    if check is not None:
        assert p.returncode == check, (args, p.returncode, p.stdout, p.stderr)
    return p


@pytest.fixture(scope="module")
def homes(tmp_path_factory):
    d = tmp_path_factory.mktemp("chan")
    hs = {"serial": d / "serial", "vsock": d / "vsock"}
    for h in hs.values():
        h.mkdir()
    yield hs
    for h in hs.values():
        assert not clean_home(h, under=d), "QEMU or capsem-vm left behind"


def measure(home, channel):
    # a default VM is suspendable, hence on the serial channel whatever CAPSEM_CHANNEL says:
    # vsock is a --no-suspendable VM's
    extra = ["--no-suspendable"] if channel == "vsock" else []
    cli(home, channel, "create", "-n", "m", "--memory", "256M", *extra, check=0)
    info = json.loads(cli(home, channel, "info", "m", "--json", check=0).stdout)
    pid = open(os.path.join(info["vmdir"], "supervisor.pid")).read().split()[0]
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert (b"--channel\0serial" in f.read()) == (channel == "serial"), channel
    rtt = []
    for _ in range(15):
        t = time.monotonic()
        cli(home, channel, "exec", "m", "--", "true", check=0)
        rtt.append(time.monotonic() - t)
    data = os.urandom(16 << 20)
    t = time.monotonic()
    p = cli(home, channel, "exec", "m", "--", "cat", input=data, check=0)
    mibs = 32 / (time.monotonic() - t)
    assert p.stdout == data
    cli(home, channel, "delete", "m", check=0)
    return statistics.median(rtt), mibs


def test_everything_over_the_serial_channel(homes):
    home = homes["serial"]
    cli(home, "serial", "create", "-n", "s", "--memory", "256M", check=0)
    vmdir = json.loads(cli(home, "serial", "info", "s", "--json", check=0).stdout)["vmdir"]
    pid = open(os.path.join(vmdir, "supervisor.pid")).read().split()[0]
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert b"--channel\0serial" in f.read(), "capsem-vm was not asked for the serial channel"
    # the guest's end: capsem-chan's sockets, no vsock in use
    out = cli(home, "serial", "exec", "s", "--", "sh", "-c",
              "ls /run/capsem/chan; echo err >&2; exit 3", check=3)
    assert out.stdout.split() == [b"5000", b"5002", b"5003", b"5007", b"listen-5001"], out
    assert out.stderr == b"err\n"
    # a large stream both ways, intact
    data = os.urandom(8 << 20)
    p = cli(home, "serial", "exec", "s", "--", "sha256sum", input=data, check=0)
    assert p.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
    # the exec audit sees the streams as with vsock
    ev = wait_for(lambda: [e for e in json.loads(cli(
        home, "serial", "events", "s", "--kind", "exec", "--json", check=0).stdout)
        if e["argv"] == ["sha256sum"] and e["ts_end"]], 20, "the exec's ledger row")
    assert ev[0]["exit_code"] == 0 and ev[0]["stdin_bytes"] == len(data), ev
    # the MCP relay (guest -> host port 5003) through the mux: the gateway answers
    p = cli(home, "serial", "exec", "s", "--", "capsem-snapshots", "list", "--json", check=0)
    assert json.loads(p.stdout)["snapshots"] == [], p
    # DNS (guest -> host port 5007): the host's resolver answers, allowed or not
    p = cli(home, "serial", "exec", "s", "--", "nslookup", "blocked.invalid", "127.0.0.1")
    assert b"NXDOMAIN" in p.stdout + p.stderr or b"can't resolve" in p.stdout + p.stderr, p
    cli(home, "serial", "delete", "s", check=0)


def test_a_restarted_capsem_chan_starts_over(homes):
    """capsem-chan killed in the guest (init restarts it): its new HELLO carries a nonce, the host
    forgets the old session's streams and answers, the new process skips the old bytes up to the
    answer, and every port works again both ways: exec (host -> guest), the MCP relay and DNS
    (guest -> host). Killed in the middle of a large stream, and several times."""
    home = homes["serial"]
    cli(home, "serial", "create", "-n", "r", "--memory", "256M", check=0)
    data = os.urandom(4 << 20)
    for i in range(3):
        before = cli(home, "serial", "exec", "r", "--", "pidof", "capsem-chan", check=0)
        # the exec that kills it rides the channel itself: it is cut (the stream was reset),
        # and a stream is in flight (cat of 4 MiB) when it dies
        p = cli(home, "serial", "exec", "r", "--", "sh", "-c",
                "cat >/dev/null & sleep 0.2; kill -9 $(pidof capsem-chan); sleep 5",
                input=data)
        assert p.returncode != 0, p

        def works():
            q = cli(home, "serial", "exec", "r", "--", "pidof", "capsem-chan")
            return q.returncode == 0 and q.stdout != before.stdout and q
        q = wait_for(works, 30, "an exec through the restarted capsem-chan")
        print(f"\nround {i}: capsem-chan {before.stdout.strip().decode()} -> "
              f"{q.stdout.strip().decode()}")
        # a large stream intact, the MCP relay and DNS (the guest's streams to the host)
        p = cli(home, "serial", "exec", "r", "--", "sha256sum", input=data, check=0)
        assert p.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
        p = cli(home, "serial", "exec", "r", "--", "capsem-snapshots", "list", "--json",
                check=0)
        assert json.loads(p.stdout)["snapshots"] == [], p
        p = cli(home, "serial", "exec", "r", "--", "nslookup", "blocked.invalid", "127.0.0.1")
        assert b"NXDOMAIN" in p.stdout + p.stderr or b"can't resolve" in p.stdout + p.stderr, p
    # the new session pauses for a save like the first
    cli(home, "serial", "suspend", "r", check=0)
    cli(home, "serial", "resume", "r", check=0)
    p = cli(home, "serial", "exec", "r", "--", "echo", "resumed", check=0)
    assert p.stdout == b"resumed\n", p
    cli(home, "serial", "delete", "r", check=0)


def test_serial_against_vsock(homes):
    """Same run, same machine (TCG): exec round trip and a 16 MiB echo stream."""
    s_rtt, s_mibs = measure(homes["serial"], "serial")
    v_rtt, v_mibs = measure(homes["vsock"], "vsock")
    print(f"\nserial channel vs vsock (TCG): exec round trip {s_rtt * 1000:.0f} ms vs "
          f"{v_rtt * 1000:.0f} ms ({s_rtt / v_rtt:.2f}x), stream {s_mibs:.1f} vs "
          f"{v_mibs:.1f} MiB/s ({s_mibs / v_mibs:.2f}x)")
