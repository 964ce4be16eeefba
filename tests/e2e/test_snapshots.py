"""Workspace snapshots (issue 12, items 3 and 5): taken host-side by capsemd from the folder the
guest writes over virtio-fs, through `capsem snapshot` and the API.

One VM for the module. Files written in the guest, a snapshot, changes in the guest: `diff`
names exactly those; `revert` restores byte-identical content and deletes the added file (checked
from inside the guest). Symlinks the guest plants (to /etc, and a directory swapped for a symlink)
never make the host read or write outside the workspace. A revert while the guest rewrites the
file in a loop: a host reader only ever sees one whole version. A 10,000-file workspace with one
changed file snapshots in a fraction of the first snapshot's time (a ratio, not a time: TCG, busy
machines). Automatic snapshots after a daemon restart with CAPSEM_SNAPSHOT_INTERVAL_S.
"""
import hashlib
import json
import os
import threading
import time

import pytest

from conftest import wait_for
from test_cli_daemon import clean_home, cli, stop_daemon

VISIBLE_S = 10  # a host-side change is seen by the guest within virtio-fs's cache=auto bound


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("snap")
    home = d / "home"
    home.mkdir()
    share = d / "project"
    share.mkdir()
    saved = os.environ.pop("CAPSEM_SNAPSHOT_INTERVAL_S", None)
    os.environ["CAPSEM_SNAPSHOT_INTERVAL_S"] = "0"  # no automatic ones until the last test
    p = cli(home, "create", "-n", "snap", "--memory", "256M", "--workspace", str(share),
            "--json", timeout=600)
    assert p.returncode == 0, p
    vmdir = json.loads(p.stdout)["vmdir"]
    yield d, home, share, vmdir
    os.environ.pop("CAPSEM_SNAPSHOT_INTERVAL_S", None)
    if saved is not None:
        os.environ["CAPSEM_SNAPSHOT_INTERVAL_S"] = saved
    assert not clean_home(home, under=d), "QEMU, capsem-vm or virtiofsd left behind"


def sh(home, script, check=0):
    p = cli(home, "exec", "snap", "--", "sh", "-c", script, timeout=300)
    if check is not None:
        assert p.returncode == check, (script, p)
    return p.stdout.decode()


def snap(home, *args, check=0):
    p = cli(home, "snapshot", *args, timeout=600)
    if check is not None:
        assert p.returncode == check, (args, p)
    return p


def snapj(home, *args, check=0):
    return json.loads(snap(home, *args, "--json", check=check).stdout)


def files_of(changes, kind):
    return sorted(c["path"] for c in changes[kind] if c["type"] == "file")


def sums(home, paths):
    """sha256 of each path as the guest sees it ("-" when absent)."""
    out = sh(home, " ; ".join(f"( sha256sum {p} 2>/dev/null || echo '- {p}' )" for p in paths))
    return {ln.split()[1]: ln.split()[0] for ln in out.splitlines()}


def test_diff_and_revert(env):
    d, home, share, vmdir = env
    sh(home, "mkdir -p sub/deep && echo keep > keep.txt && echo before > mod.txt && "
             "echo doomed > del.txt && head -c 300000 /dev/urandom > sub/deep/blob.bin && "
             "chmod 0751 sub/deep/blob.bin")
    paths = ["keep.txt", "mod.txt", "del.txt", "sub/deep/blob.bin", "new.txt"]
    before = sums(home, paths)
    assert before["new.txt"] == "-" and before["del.txt"] != "-", before
    c = snapj(home, "create", "snap", "base")
    assert c["created"] and c["snapshot"]["name"] == "base" and c["snapshot"]["files"] == 4, c
    # nothing changed yet
    ch = snapj(home, "diff", "snap", "base")
    assert ch["counts"] == {"added": 0, "modified": 0, "deleted": 0}, ch
    # the guest changes one file, deletes one, adds one
    sh(home, "echo after, and longer > mod.txt && rm del.txt && echo fresh > new.txt && "
             "head -c 1000 /dev/zero >> sub/deep/blob.bin")
    ch = snapj(home, "diff", "snap")  # the newest: base
    assert ch["snapshot"] == "base"
    assert files_of(ch, "added") == ["new.txt"], ch
    assert files_of(ch, "modified") == ["mod.txt", "sub/deep/blob.bin"], ch
    assert files_of(ch, "deleted") == ["del.txt"], ch
    mod = [c for c in ch["modified"] if c["path"] == "mod.txt"][0]
    assert mod["old_size"] == 7 and mod["size"] == 18, mod
    human = snap(home, "diff", "snap", "base").stdout.decode()
    assert "A  new.txt\n" in human and "M  mod.txt\n" in human and "D  del.txt\n" in human
    # revert everything: byte-identical, the new file gone (seen from the guest)
    rv = snapj(home, "revert", "snap", ".", "--from", "base")
    assert rv["errors"] == [] and rv["snapshot"] == "base", rv
    assert sorted(rv["written"]) == ["del.txt", "mod.txt", "sub/deep/blob.bin"], rv
    assert rv["deleted"] == ["new.txt"], rv
    wait_for(lambda: sums(home, paths) == before, VISIBLE_S, "the guest to see the revert")
    assert sh(home, "stat -c %a sub/deep/blob.bin") == "751\n"
    assert snapj(home, "diff", "snap", "base")["counts"] == {"added": 0, "modified": 0,
                                                               "deleted": 0}
    # one path at a time; a path absent in the snapshot is deleted
    sh(home, "echo again > mod.txt && echo extra > extra.txt")
    rv = snapj(home, "revert", "snap", "/root/workspace/mod.txt", "extra.txt")
    assert rv["written"] == ["mod.txt"] and rv["deleted"] == ["extra.txt"], rv
    wait_for(lambda: sh(home, "cat mod.txt; ls extra.txt 2>/dev/null || true") == "before\n",
             VISIBLE_S, "the guest to see the second revert")
    # list, history, names, rm, compact
    snap(home, "create", "snap", "second")
    lst = snapj(home, "list", "snap")["snapshots"]
    assert [s["name"] for s in lst] == ["second", "base"], lst
    h = snapj(home, "history", "snap", "mod.txt")["versions"]
    assert [v["snapshot"] for v in h] == ["second", "base"] and h[0]["present"], h
    p = snap(home, "create", "snap", "base", check=1)
    assert b"already exists" in p.stderr, p
    p = snap(home, "create", "snap", "../evil", check=1)
    assert b"NAME" in p.stderr, p
    p = snap(home, "create", "snap", "auto-000001", check=1)
    p = snap(home, "diff", "snap", "nope", check=1)
    assert b"no snapshot 'nope'" in p.stderr, p
    p = snap(home, "revert", "snap", "../../etc/passwd", check=1)
    assert b"not a path inside the workspace" in p.stderr, p
    assert snapj(home, "rm", "snap", "second") == {"deleted": "second"}
    snap(home, "rm", "snap", "second", check=1)
    k = snapj(home, "compact", "snap")
    assert k["removed_objects"] == 0 and k["kept_objects"] >= 4, k  # all still in "base"


def test_planted_symlinks_never_lead_outside(env):
    d, home, share, vmdir = env
    outside = d / "outside"
    outside.mkdir()
    secret = outside / "secret"
    secret.write_text("host secret\n")
    passwd = open("/etc/passwd", "rb").read()
    # a real directory first, snapshotted
    sh(home, "mkdir -p realdir && echo inside > realdir/f")
    snap(home, "create", "snap", "links0")
    # the guest plants a symlink to /etc and swaps realdir for a symlink; on the host those point
    # at the host's /etc and at a directory outside the share
    sh(home, f"ln -s /etc evil && rm -rf realdir && ln -s {outside} realdir")
    c = snapj(home, "create", "snap", "links1")
    assert c["created"], c
    h = snapj(home, "history", "snap", "evil")["versions"]
    assert h[0]["type"] == "symlink" and h[0]["target"] == "/etc", h
    for p in ("evil/passwd", "realdir/secret"):
        assert not any(v["present"] for v in snapj(home, "history", "snap", p)["versions"])
    # nothing outside was stored
    store = os.path.join(vmdir, "snapshots", "objects")
    for data in (passwd, b"host secret\n"):
        sha = hashlib.sha256(data).hexdigest()
        assert not os.path.exists(os.path.join(store, sha[:2], sha)), "stored an outside file"
    # reverts through the links: refused or a no-op, never a write outside
    p = snap(home, "revert", "snap", "evil/passwd", "--from", "links1", "--json", check=None)
    p = snap(home, "revert", "snap", "realdir/f", "--from", "links0", "--json", check=1)
    assert b"parent is not a directory" in p.stderr, p
    p = snap(home, "revert", "snap", "realdir/secret", "--from", "links1", check=None)
    assert open("/etc/passwd", "rb").read() == passwd
    assert secret.read_text() == "host secret\n" and sorted(os.listdir(outside)) == ["secret"]
    # reverting the directory itself replaces the link with the snapshot's directory
    rv = snapj(home, "revert", "snap", "realdir", "evil", "--from", "links0")
    assert rv["errors"] == [] and "evil" in rv["deleted"], rv
    assert os.path.isdir(share / "realdir") and not os.path.islink(share / "realdir")
    assert not os.path.lexists(share / "evil")
    wait_for(lambda: sh(home, "cat realdir/f; [ -e evil ] || echo gone") == "inside\ngone\n",
             VISIBLE_S, "the guest to see the restored directory")
    assert open("/etc/passwd", "rb").read() == passwd
    assert sorted(os.listdir(outside)) == ["secret"]


def test_revert_while_the_guest_writes(env):
    d, home, share, vmdir = env
    old = b"O" * 65536
    new = b"N" * 65536
    (share / "old.src").write_bytes(old)
    (share / "new.src").write_bytes(new)
    (share / "hot.txt").write_bytes(old)
    snap(home, "create", "snap", "hot0")
    # the guest replaces hot.txt with the new content in a loop (atomically, by rename: what a
    # careful editor does) until told to stop
    writer = {}

    def write_loop():
        writer["p"] = cli(home, "exec", "snap", "--", "sh", "-c",
                          "i=0; while [ ! -e stop ] && [ $i -lt 4000 ]; do cp new.src hot.tmp "
                          "&& mv hot.tmp hot.txt; i=$((i+1)); done; echo $i", timeout=600)

    w = threading.Thread(target=write_loop)
    w.start()
    seen = {"old": 0, "new": 0, "torn": 0}
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                data = (share / "hot.txt").read_bytes()
            except FileNotFoundError:
                seen["torn"] += 1  # never absent: renames replace it
                continue
            seen["old" if data == old else "new" if data == new else "torn"] += 1

    t = threading.Thread(target=reader)
    t.start()
    try:
        wait_for(lambda: (share / "hot.txt").read_bytes() == new, 60, "the guest's writes")
        n = 0
        end = time.monotonic() + 6  # revert again and again while the guest writes
        while time.monotonic() < end:
            rv = snapj(home, "revert", "snap", "hot.txt", "--from", "hot0")
            assert rv["errors"] == [], rv
            n += len(rv["written"])
    finally:
        (share / "stop").write_text("")
        stop.set()
        t.join()
        w.join()
    assert writer["p"].returncode == 0, writer
    assert seen["torn"] == 0, seen
    writes = int(writer["p"].stdout)
    assert seen["old"] > 0 and seen["new"] > 0 and n > 1 and writes > 1, (seen, n, writes)
    print(f"\nrevert under a writing guest: {n} reverts, {writes} guest writes, "
          f"host reads {seen}")
    for f in ("stop", "old.src", "new.src", "hot.txt"):
        (share / f).unlink()


def test_ten_thousand_files_one_changed(env):
    d, home, share, vmdir = env
    many = share / "many"
    many.mkdir()
    for i in range(100):
        sub = many / f"d{i:03d}"
        sub.mkdir()
        for k in range(100):
            (sub / f"f{k:03d}.txt").write_bytes(os.urandom(1024 + (i * 100 + k) * 37 % 32768))
    time.sleep(0.05)  # past the clock tick of the last write
    t0 = time.monotonic()
    first = snapj(home, "create", "snap", "big0")
    t_first = time.monotonic() - t0
    assert first["snapshot"]["files"] >= 10000 and first["hashed_files"] >= 10000, first
    sh(home, "echo changed >> many/d042/f042.txt")
    t0 = time.monotonic()
    second = snapj(home, "create", "snap", "big1")
    t_second = time.monotonic() - t0
    assert second["hashed_files"] == 1 and second["new_objects"] == 1, second
    ch = snapj(home, "diff", "snap", "big0")
    assert files_of(ch, "modified") == ["many/d042/f042.txt"], ch["counts"]
    ratio = first["elapsed_ms"] / max(second["elapsed_ms"], 0.001)
    print(f"\n10,000 files: first snapshot {first['elapsed_ms']:.0f} ms (CLI {t_first:.2f} s), "
          f"one changed {second['elapsed_ms']:.0f} ms (CLI {t_second:.2f} s): {ratio:.1f}x")
    assert ratio >= 4, (first["elapsed_ms"], second["elapsed_ms"])


def test_automatic_snapshots_after_a_daemon_restart(env):
    d, home, share, vmdir = env
    # the VM outlives the daemon; the next one (started by the CLI) reads the interval
    stop_daemon(home)
    os.environ["CAPSEM_SNAPSHOT_INTERVAL_S"] = "2"
    sh(home, "echo auto > auto.txt")

    def autos():
        return [s for s in snapj(home, "list", "snap")["snapshots"] if s["auto"]]

    wait_for(lambda: len(autos()) >= 1, 60, "an automatic snapshot")
    a = autos()[0]
    assert a["name"].startswith("auto-"), a
    h = snapj(home, "history", "snap", "auto.txt")["versions"]
    assert h[0]["snapshot"] == a["name"] and h[0]["present"], h
    # nothing changes: no new automatic snapshot over a few ticks
    time.sleep(7)
    assert [s["name"] for s in autos()] == [a["name"]], autos()
    # a change is picked up by the next tick
    sh(home, "echo more >> auto.txt")
    wait_for(lambda: len(autos()) >= 2, 60, "a second automatic snapshot")
    # a stopped VM's snapshots still answer
    assert cli(home, "stop", "snap", timeout=300).returncode == 0
    assert len(snapj(home, "list", "snap")["snapshots"]) >= 2
    assert snapj(home, "diff", "snap")["counts"]["modified"] == 0
