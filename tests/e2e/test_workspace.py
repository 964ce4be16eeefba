"""The workspace (issue 12, item 1): a host folder shared into the VM, mounted on
/root/workspace, where commands start. A named VM (suspendable by default) gets it from
capsem-vm's own 9p server over a virtio-serial port; a --no-suspendable one over virtio-fs
(Debian's virtiofsd, supervised by capsem-vm; asked for explicitly here, since a host whose root
cannot raise the open-file limit gets QEMU's 9p by default).

Both ways, on both transports: a file the guest writes is on the host when the exec returns; a
file the host writes is seen by the guest within a bound (measured and printed). Without
--workspace a VM gets its own folder in its VM directory, gone with the VM. What the guest's
root creates belongs to the user running Capsem (this module also runs as an unprivileged user:
Debian's C virtiofsd needs root, so there a --no-suspendable VM's workspace is QEMU's 9p share,
which creates files as the user). virtiofsd killed under a running VM: the VM is reported
crashed naming virtiofsd, nothing hangs, nothing is left.
"""
import json
import os
import time

import pytest

from conftest import procs_mentioning, wait_for
from test_cli_daemon import clean_home, cli

VISIBLE_S = 5  # the bound a host-side change must be seen in: cache=auto caches for 1 s


@pytest.fixture(scope="module")
def wsenv(tmp_path_factory):
    d = tmp_path_factory.mktemp("ws")
    home = d / "home"
    home.mkdir()
    # virtio-fs (for --no-suspendable VMs) asked for explicitly, since a host whose root cannot
    # raise the open-file limit (this kind of machine: no CAP_SYS_RESOURCE) gets 9p by default
    saved = os.environ.get("CAPSEM_WORKSPACE_TRANSPORT")
    os.environ["CAPSEM_WORKSPACE_TRANSPORT"] = "virtiofs"
    yield d, home
    if saved is None:
        os.environ.pop("CAPSEM_WORKSPACE_TRANSPORT", None)
    else:
        os.environ["CAPSEM_WORKSPACE_TRANSPORT"] = saved
    assert not clean_home(home, under=d), "QEMU, capsem-vm or virtiofsd left behind"


def sh(home, vm, script, check=0):
    p = cli(home, "exec", vm, "--", "sh", "-c", script, timeout=300)
    if check is not None:
        assert p.returncode == check, (script, p)
    return p.stdout.decode()


@pytest.mark.parametrize("kind", ["suspendable", "no-suspendable"])
def test_a_shared_folder_both_ways(wsenv, kind):
    d, home = wsenv
    share = d / f"project-{kind}"
    share.mkdir()
    (share / "from-host.txt").write_text("hello from the host\n")
    p = cli(home, "create", "-n", "ws", f"--{kind}", "--memory", "256M", "--workspace",
            str(share), "--json", timeout=600)
    assert p.returncode == 0, p
    info = json.loads(p.stdout)
    assert info["workspace"] == str(share) and info["workspace_shared"] is True, info
    assert info["can_suspend"] is (kind == "suspendable"), info
    mounts = sh(home, "ws", "grep ' /root/workspace ' /proc/mounts")
    assert (" 9p " in mounts and "trans=fd" in mounts) if kind == "suspendable" else \
        (" virtiofs " in mounts or os.geteuid() != 0), mounts
    # commands start in the workspace; the guest sees the host's file
    assert sh(home, "ws", "pwd; cat from-host.txt") == "/root/workspace\nhello from the host\n"
    # the guest's writes are on the host when the exec returns, owned by the user, not root
    sh(home, "ws", "echo guest > from-guest.txt; mkdir -p sub/dir; echo deep > sub/dir/f")
    assert (share / "from-guest.txt").read_text() == "guest\n"
    assert (share / "sub" / "dir" / "f").read_text() == "deep\n"
    for p_ in (share / "from-guest.txt", share / "sub" / "dir"):
        assert p_.stat().st_uid == os.getuid(), (p_, p_.stat().st_uid)
    # the host's new file: seen within the bound (measured in the guest)
    t0 = time.monotonic()
    (share / "later.txt").write_text("later\n")
    out = sh(home, "ws", f"i=0; until [ -f later.txt ]; do i=$((i+1)); "
                         f"[ $i -gt {VISIBLE_S * 20} ] && break; sleep 0.05; done; cat later.txt")
    took = time.monotonic() - t0
    assert out == "later\n", out
    # a change to an existing file is seen too
    (share / "from-host.txt").write_text("changed on the host\n")
    wait_for(lambda: sh(home, "ws", "cat from-host.txt") == "changed on the host\n",
             VISIBLE_S, "the host's change in the guest")
    # deletes both ways
    (share / "later.txt").unlink()
    wait_for(lambda: sh(home, "ws", "[ -e later.txt ] && echo yes || echo no") == "no\n",
             VISIBLE_S, "the host's delete in the guest")
    sh(home, "ws", "rm from-guest.txt")
    assert not (share / "from-guest.txt").exists()
    print(f"\n{kind}: host file seen by the guest {took:.2f} s after it was written (exec "
          f"included)")
    # the share outlives the VM: the user's folder is not the VM's to delete
    assert cli(home, "delete", "ws", timeout=300).returncode == 0
    assert (share / "from-host.txt").exists() and (share / "sub" / "dir" / "f").exists()


def fs_rows(home, vm):
    """Every fs row of the VM's current session, paging with --since."""
    rows, since = [], 0
    while True:
        p = cli(home, "events", vm, "--kind", "fs", "--json", "-n", "2000",
                "--since", str(since), timeout=120)
        assert p.returncode == 0, p
        page = json.loads(p.stdout)
        if not page:
            return rows
        rows += page
        since = page[-1]["id"]


def test_file_audit_records_each_change(wsenv):
    """Issue 12 item 2: the host audits the shared folder: what the guest does to its files is in
    the ledger as fs rows, coalesced, with exact paths and sizes; noise is summarised; 10,000 files
    written at once are all there."""
    d, home = wsenv
    share = d / "audited"
    share.mkdir()
    (share / "pre.txt").write_text("there before\n")
    p = cli(home, "create", "-n", "au", "--memory", "256M", "--workspace", str(share),
            timeout=600)
    assert p.returncode == 0, p
    sh(home, "au", "printf hello > a.txt; printf 'hello world' >> a.txt; mv a.txt b.txt; "
                   "mkdir -p d/e; printf 12345678 > d/e/f.bin; rm pre.txt; "
                   "mkdir -p node_modules/pkg; for i in 1 2 3 4 5; do printf x > "
                   "node_modules/pkg/$i.js; done; ln -s /etc evil")

    def settled():
        rows = fs_rows(home, "au")
        got = {(r["action"], r["path"]) for r in rows}
        want = {("created", "d"), ("created", "d/e"), ("created", "d/e/f.bin"),
                ("deleted", "pre.txt"), ("created", "node_modules"),
                ("summary", "node_modules"), ("created", "evil")}
        b = ("created", "b.txt") in got or ("renamed", "b.txt") in got
        sums = [r for r in rows if r["action"] == "summary"]
        return rows if want <= got and b and sum(r["count"] for r in sums) >= 6 else None

    rows = wait_for(settled, 30, "the audit's rows")
    by = {(r["action"], r["path"]): r for r in rows}
    # a file created, appended to and renamed inside the coalescing window is one created row
    # under its last name, with its size (when the guest is slower than the window: created
    # a.txt, then renamed to b.txt)
    if ("created", "b.txt") in by:
        assert by[("created", "b.txt")]["size"] == 16 and by[("created", "b.txt")]["type"] == "file"
        assert not [r for r in rows if r["path"] == "a.txt"], rows
    else:
        assert by[("renamed", "b.txt")]["old_path"] == "a.txt", rows
    assert by[("created", "d/e/f.bin")]["size"] == 8
    assert by[("created", "d")]["type"] == "dir"
    assert by[("created", "evil")]["type"] == "symlink"  # recorded, never followed
    # pkg/ and its five files: summarised (one row per flush), never one row each
    sums = [r for r in rows if r["action"] == "summary" and r["path"] == "node_modules"]
    assert sum(r["count"] for r in sums) == 6 and sum(r["size"] for r in sums) == 5, sums
    assert not [r for r in rows if r["path"].startswith("node_modules/")], rows
    # later changes: modify, rename of a reported file, delete
    sh(home, "au", "printf 'changed!' > b.txt")
    wait_for(lambda: any(r["action"] == "modified" and r["path"] == "b.txt" and r["size"] == 8
                         for r in fs_rows(home, "au")), 30, "modified b.txt")
    sh(home, "au", "mv b.txt c.txt; rm -r d")
    # (b.txt was reported before: its rename is a renamed row whatever the timing)
    rows = wait_for(lambda: (lambda rs: rs if {("renamed", "c.txt"), ("deleted", "d/e/f.bin"),
                                                  ("deleted", "d")}
                             <= {(r["action"], r["path"]) for r in rs} else None)(
        fs_rows(home, "au")), 30, "renamed and deleted")
    ren = [r for r in rows if r["action"] == "renamed"][0]
    assert ren["old_path"] == "b.txt", ren
    # the human view
    p = cli(home, "events", "au", "--kind", "fs", timeout=60)
    assert p.returncode == 0 and b"renamed b.txt -> c.txt" in p.stdout, p

    # 10,000 files at once (more events than the kernel queues): every one is recorded
    sh(home, "au", "mkdir many && cd many && seq 10000 | xargs touch")

    def all_there():
        rows = fs_rows(home, "au")
        made = {r["path"] for r in rows if r["action"] == "created"
                and r["path"].startswith("many/")}
        return rows if len(made) == 10000 else None

    rows = wait_for(all_there, 120, "10,000 created rows")
    assert len([r for r in rows if r["path"].startswith("many/")]) == 10000, "duplicates"
    assert cli(home, "delete", "au", timeout=300).returncode == 0


def test_the_agent_snapshots_its_workspace(wsenv):
    """Issue 12 item 4: inside the guest, capsem-snapshots (an MCP client of the host's gateway
    through capsem-mcp-relay, like an agent's snapshot tools) takes, compares and reverts
    snapshots of /root/workspace; each call is a tool_call row in the ledger."""
    d, home = wsenv
    share = d / "agent-snap"
    share.mkdir()
    p = cli(home, "create", "-n", "asn", "--memory", "256M", "--workspace", str(share),
            timeout=600)
    assert p.returncode == 0, p

    def snap(*args, check=0):
        p = cli(home, "exec", "asn", "--", "capsem-snapshots", *args, timeout=300)
        if check is not None:
            assert p.returncode == check, (args, p)
        return p

    sh(home, "asn", "printf one > keep.txt; printf gone > doomed.txt")
    made = json.loads(snap("create", "first", "--json").stdout)
    assert made["created"] is True and made["snapshot"]["name"] == "first", made
    assert snap("create", "first", check=1).stderr.decode().strip(), "a duplicate is refused"
    sh(home, "asn", "printf two > keep.txt; rm doomed.txt; printf new > added.txt")
    ch = json.loads(snap("changes", "first", "--json").stdout)
    assert [c["path"] for c in ch["added"]] == ["added.txt"], ch
    assert [c["path"] for c in ch["modified"]] == ["keep.txt"], ch
    assert [c["path"] for c in ch["deleted"]] == ["doomed.txt"], ch
    text = snap("changes", "first").stdout.decode()
    assert "path=added.txt" in text and "path=doomed.txt" in text, text
    snap("revert", "keep.txt", "doomed.txt", "added.txt", "--from", "first")
    # on the host at once; in the guest within virtio-fs's cache bound
    assert (share / "keep.txt").read_text() == "one" and (share / "doomed.txt").read_text() \
        == "gone" and not (share / "added.txt").exists()
    wait_for(lambda: sh(home, "asn", "cat keep.txt doomed.txt; [ -e added.txt ] && echo still "
                                     "|| :") == "onegone", VISIBLE_S, "the revert in the guest")
    hist = json.loads(snap("history", "keep.txt", "--json").stdout)
    assert hist["versions"][0]["snapshot"] == "first", hist
    lst = json.loads(snap("list", "--json", "--limit", "1").stdout)
    assert [x["name"] for x in lst["snapshots"]] == ["first"] and lst["total_snapshots"] == 1
    assert "invalid" in snap("create", "../x", check=1).stderr.decode()
    snap("delete", "first")
    assert json.loads(snap("list", "--json").stdout)["snapshots"] == []
    # the host sees the same store
    p = cli(home, "snapshot", "list", "asn", "--json", timeout=60)
    assert p.returncode == 0 and json.loads(p.stdout)["snapshots"] == [], p
    # each call went through the gateway: tool_call rows with the tool's name
    p = cli(home, "events", "asn", "--kind", "tool", "--json", "-n", "1000", timeout=60)
    tools = [e["tool"] for e in json.loads(p.stdout)]
    for t in ("snapshots_create", "snapshots_changes", "snapshots_revert",
              "snapshots_history", "snapshots_list", "snapshots_delete"):
        assert t in tools, (t, tools)
    assert cli(home, "delete", "asn", timeout=300).returncode == 0


def test_a_vm_has_its_own_workspace_without_one(wsenv):
    d, home = wsenv
    p = cli(home, "create", "-n", "own", "--memory", "256M", "--json", timeout=600)
    assert p.returncode == 0, p
    info = json.loads(p.stdout)
    ws = info["workspace"]
    assert ws == info["vmdir"] + "/workspace" and info["workspace_shared"] is False, info
    assert sh(home, "own", "pwd; echo mine > f") == "/root/workspace\n"
    assert open(os.path.join(ws, "f")).read() == "mine\n"
    # it survives a restart, and goes with the VM
    assert cli(home, "restart", "own", timeout=600).returncode == 0
    assert sh(home, "own", "cat f") == "mine\n"
    assert cli(home, "delete", "own", timeout=300).returncode == 0
    assert not os.path.exists(ws)


def test_run_with_a_workspace(wsenv):
    d, home = wsenv
    share = d / "run-share"
    share.mkdir()
    for mode in ([], ["--direct"]):
        p = cli(home, "run", *mode, "--workspace", str(share), "--", "sh", "-c",
                "pwd; echo ran > ran.txt", timeout=600)
        assert p.returncode == 0 and p.stdout == b"/root/workspace\n", (mode, p)
        assert (share / "ran.txt").read_text() == "ran\n"
        (share / "ran.txt").unlink()
    p = cli(home, "run", "--workspace", str(d / "missing"), "--", "true")
    assert p.returncode == 2 and b"--workspace" in p.stderr, p
    p = cli(home, "create", "--workspace", str(share / "nope"))
    assert p.returncode == 2 and b"--workspace" in p.stderr, p
    p = cli(home, "create", "--mount", f"{share}:/root/workspace")
    assert p.returncode == 1 and b"/root/workspace is the workspace" in p.stderr, p


@pytest.mark.skipif(os.geteuid() != 0, reason="as a normal user the workspace is a 9p share "
                    "(Debian's virtiofsd needs root): there is no virtiofsd to kill")
def test_virtiofsd_killed_is_reported_and_nothing_hangs(wsenv):
    d, home = wsenv
    share = d / "doomed"
    share.mkdir()
    # --no-suspendable: virtio-fs (a suspendable VM's workspace is capsem-vm's own server)
    assert cli(home, "create", "-n", "doomed", "--no-suspendable", "--memory", "256M",
               "--workspace", str(share), timeout=600).returncode == 0
    pids = [p for p in procs_mentioning(f"source={share}")
            if b"virtiofsd" in open(f"/proc/{p}/cmdline", "rb").read()]
    # virtiofsd's sandbox: under Landlock one process chrooted into the share (capsemd's
    # Landlock domain forbids the namespace sandbox's pivot_root); without it a parent outside
    # and its worker in new namespaces. Kill the one that parses the guest's requests
    def ppid(pid):
        return int([ln for ln in open(f"/proc/{pid}/status")
                    if ln.startswith("PPid:")][0].split()[1])

    workers = [p for p in pids if ppid(p) in pids]
    if b"sandbox=chroot" in open(f"/proc/{pids[0]}/cmdline", "rb").read():
        assert len(pids) == 1 and not workers, pids
        workers = pids
    else:
        assert len(pids) == 2 and len(workers) == 1, pids
    os.kill(workers[0], 9)
    t0 = time.monotonic()

    def state():
        return json.loads(cli(home, "info", "doomed", "--json").stdout)

    wait_for(lambda: state()["state"] == "crashed", 60, "the VM to be reported crashed")
    took = time.monotonic() - t0
    err = state()["error"]
    assert "virtiofsd" in err and "virtiofsd.log" in err, err
    p = cli(home, "exec", "doomed", "--", "true", timeout=60)
    assert p.returncode != 0 and p.stderr.startswith(b"capsem: "), p
    assert not procs_mentioning(str(share)), "virtiofsd or QEMU left behind"
    print(f"\nvirtiofsd killed: VM reported crashed after {took:.2f} s")
    assert cli(home, "delete", "doomed", timeout=300).returncode == 0


RAW9P = r"""
import glob, json, os, struct, sys, time
outside = sys.argv[1]
port = [p for p in glob.glob("/sys/class/virtio-ports/*")
        if open(p + "/name").read().strip() == "capsem.ws"][0].rsplit("/", 1)[1]
for pid in filter(str.isdigit, os.listdir("/proc")):  # root in the guest takes the port over
    try:
        if open("/proc/%s/comm" % pid).read().strip() == "capsem-wsrelay":
            os.kill(int(pid), 9)
    except OSError:
        pass
fd = None
for _ in range(100):
    try:
        fd = os.open("/dev/" + port, os.O_RDWR)
        break
    except OSError:
        time.sleep(0.05)
def s(x):
    x = x.encode()
    return struct.pack("<H", len(x)) + x
def readn(n):
    b = b""
    while len(b) < n:
        c = os.read(fd, n - len(b))
        if not c:
            time.sleep(0.01)
        b += c
    return b
def rpc(t, body):
    os.write(fd, struct.pack("<IBH", 7 + len(body), t, 1) + body)
    size, rt, _ = struct.unpack("<IBH", readn(7))
    data = readn(size - 7)
    if rt == 7:
        return "err", struct.unpack("<I", data[:4])[0]
    return rt, data
def walk(fid, newfid, names):
    rt, d = rpc(110, struct.pack("<IIH", fid, newfid, len(names)) + b"".join(map(s, names)))
    return ("err", d) if rt == "err" else ("qids", struct.unpack("<H", d[:2])[0])
r = {}
r["version"] = rpc(100, struct.pack("<I", 8192) + s("9P2000.L"))[0]
r["attach"] = rpc(104, struct.pack("<II", 1, 0xFFFFFFFF) + s("root") + s("") +
                  struct.pack("<I", 0))[0]
r["dotdot"] = walk(1, 2, ["..", "..", "secret.txt"])
r["abs_link"] = walk(1, 3, ["esc", "secret.txt"])
r["up_link"] = walk(1, 4, ["up", "secret.txt"])
r["link_itself"] = walk(1, 5, ["esc"])
r["open_link"] = rpc(12, struct.pack("<II", 5, 0))
r["create_via_link"] = rpc(14, struct.pack("<I", 5) + s("pwned") + struct.pack("<III", 0o101, 0o644, 0))
r["chmod_link"] = rpc(26, struct.pack("<II", 5, 1) + struct.pack("<III", 0o777, 0, 0) +
                      struct.pack("<QQQQQ", 0, 0, 0, 0, 0))
walk(1, 6, [])
r["mknod_chr"] = rpc(18, struct.pack("<I", 6) + s("tty0") + struct.pack("<IIII", 0o20666, 4, 0, 0))
walk(1, 7, ["in.txt"])
r["setuid"] = rpc(26, struct.pack("<II", 7, 1) + struct.pack("<III", 0o4755, 0, 0) +
                  struct.pack("<QQQQQ", 0, 0, 0, 0, 0))[0]
print(json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in r.items()},
                 default=lambda b: b.hex()))
"""


def test_a_guest_speaking_9p_itself_cannot_leave_the_share(tmp_path_factory):
    """Red team: the guest's root kills the relay, takes the port over and sends its own 9p to
    capsem-vm's server: walks over "..", through symlinks it planted (absolute and relative),
    opens, creates and chmods through them, a device node, a set-user-ID bit. Nothing outside the
    workspace is reached or changed, and the host file keeps its mode."""
    from test_debian_image import DEBIAN, ensure_debian_image
    from conftest import VM
    if os.geteuid() != 0 and not os.path.exists(os.path.join(DEBIAN, "build.json")):
        pytest.skip("the guest side needs python3, i.e. the Debian image, which only root can "
                    "build (mmdebstrap); the root run of this module covers it")
    ensure_debian_image()
    d = tmp_path_factory.mktemp("raw9p")
    ws, outside = d / "ws", d / "outside"
    ws.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("host secret\n")
    os.chmod(outside, 0o755)
    (ws / "in.txt").write_text("in\n")
    v = VM(d / "vm", "--channel", "serial", "--memory", "512M", "--workspace", str(ws),
           image=DEBIAN)
    try:
        r = v.sh(f"ln -s {outside} /root/workspace/esc && ln -s .. /root/workspace/up")
        assert r.code == 0, r
        assert "'" not in RAW9P  # it goes in single quotes
        r = v.sh(f"python3 -c '{RAW9P}' {outside}", timeout=120)
        assert r.code == 0, r
        res = json.loads(r.stdout.decode().strip().splitlines()[-1])
    finally:
        v.stop()
    assert res["version"] == 101 and res["attach"] == 105, res
    # ".." at the root stays at the root: "secret.txt" is not found there
    assert res["dotdot"][0] == "err" or res["dotdot"][1] < 3, res
    for k in ("abs_link", "up_link"):  # never through a symlink
        assert res[k][0] == "err" or res[k][1] < 2, (k, res)
    assert res["link_itself"] == ["qids", 1], res
    for k in ("open_link", "create_via_link", "chmod_link", "mknod_chr"):
        assert res[k][0] == "err", (k, res)
    assert res["setuid"] == 27, res  # accepted, but the bit is never set on the host
    assert not (ws / "in.txt").stat().st_mode & 0o6000
    assert not (outside / "pwned").exists() and not (ws / "tty0").exists()
    assert (outside.stat().st_mode & 0o777) == 0o755
    assert sorted(os.listdir(outside)) == ["secret.txt"]
    print(f"\nraw 9p from the guest: {res}")
