"""containerd-shim-capsem-v2 end to end: Debian's containerd and ctr drive the shim, which asks a
private capsemd for one Capsem microVM per sandbox (docs/ARCHITECTURE.md "containerd shim").

The module starts its own containerd (private root, state and socket; the CRI plugin off), with
the shim on its PATH and a private CAPSEM_HOME in its environment (containerd passes it to its
shims, the shim to the capsemd it starts). The image is built here (tests/e2e/ociimage.py: the
host's static busybox and curl) and imported with `ctr image import`: no registry. HTTPS goes to
tests/e2e/upstream.py on 127.0.0.1, sent there by the policy's [[upstream.override]] (the pattern
of test_egress.py). Afterwards no QEMU, capsem-vm, virtiofsd, shim or capsemd may be left, nor a
mount under the module's directory.

The pod directory is the VM's workspace: virtio-fs where capsem-vm can run virtiofsd, else QEMU's
9p (this host's choice is asserted); a second containerd, whose capsemd is told
CAPSEM_WORKSPACE_TRANSPORT=virtiofs, runs the virtio-fs path even where auto would pick 9p.
"""
import json
import os
import pathlib
import resource
import shutil
import signal
import sqlite3
import subprocess
import threading
import time

import pytest

from conftest import BUILD, IMAGE, IMAGES, need_image, procs_mentioning, wait_for
from ociimage import build_archive
from test_cli_daemon import clean_home, cli
from upstream import KEYS, Upstream

SHIM_DIR = os.path.join(BUILD, "src", "shim")
SHIM = os.path.join(SHIM_DIR, "containerd-shim-capsem-v2")
CAPSEMD = os.path.join(BUILD, "src", "daemon", "capsemd")
RUNTIME = "io.containerd.capsem.v2"


def _unavailable():
    for b in ("containerd", "ctr"):
        if not shutil.which(b):
            return f"{b} is not installed (scripts/install-deps.sh installs Debian's containerd)"
    if not shutil.which("go"):
        return "Go is not installed: the shim cannot be built (scripts/install-deps.sh)"
    if not os.path.exists(SHIM):
        return f"the shim was not built ({SHIM}): run `make build`"
    if os.geteuid() != 0:
        return "containerd needs root"
    return None


pytestmark = pytest.mark.skipif(_unavailable() is not None, reason=str(_unavailable()))

POLICY = """
[policy]
default = "block"

[[rule]]
name = "test-upstream"
action = "allow"
hosts = ["upstream.test", "api.anthropic.com"]
ports = [443]

[upstream]
ca_file = "{ca}"

[[upstream.override]]
host = "upstream.test"
port = 443
connect = "127.0.0.1:{port}"

[[upstream.override]]
host = "api.anthropic.com"
port = 443
connect = "127.0.0.1:{port}"
"""


class Containerd:
    def __init__(self, d, **extra_env):
        self.d = d
        self.home = os.path.join(d, "home")
        os.makedirs(self.home)
        self.up = Upstream(d)
        with open(os.path.join(self.home, "user.toml"), "w") as f:
            f.write(POLICY.format(ca=self.up.ca, port=self.up.https_port))
        cred = os.path.join(self.home, "credentials")
        with open(cred, "w") as f:
            f.write(f'[anthropic]\napi_key = "{KEYS["anthropic"]}"\n')
        os.chmod(cred, 0o600)
        # a policy profile (annotation io.capsem.policy=strict): upstream.test is not allowed
        self.strict = os.path.join(self.home, "profiles", "strict")
        os.makedirs(self.strict)
        with open(os.path.join(self.strict, "user.toml"), "w") as f:
            f.write('[policy]\ndefault = "block"\n')
        self.sock = os.path.join(d, "containerd.sock")
        # the pod directories: the shim's default, inside the pod's capsemd home (a profile's
        # pods are in its own home, profiles/NAME/pods)
        self.shimrun = os.path.join(self.home, "pods")
        cfg = os.path.join(d, "config.toml")
        with open(cfg, "w") as f:
            f.write(f'version = 2\nroot = "{d}/root"\nstate = "{d}/state"\n'
                    f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                    f'[grpc]\n  address = "{self.sock}"\n'
                    f'[ttrpc]\n  address = "{self.sock}.ttrpc"\n')
        self.env = dict(os.environ, PATH=SHIM_DIR + ":" + os.environ["PATH"],
                        CAPSEM_HOME=self.home, CAPSEM_IMAGES_DIR=IMAGES, CAPSEM_IMAGE="minimal",
                        CAPSEM_DAEMON_BIN=CAPSEMD, **extra_env)
        self.env.pop("ANTHROPIC_API_KEY", None)
        self.log = open(os.path.join(d, "containerd.log"), "wb")
        self.proc = subprocess.Popen(["containerd", "--config", cfg], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=self.env)
        wait_for(lambda: self.ctr("version", check=None).returncode == 0, 60, "containerd")
        self.image = build_archive(os.path.join(d, "image.tar"))
        self.ctr("images", "import", os.path.join(d, "image.tar"))

    def ctr(self, *args, input=b"", timeout=300, check=0):
        p = subprocess.run(["ctr", "-a", self.sock, *args], input=input, capture_output=True,
                           timeout=timeout, env=self.env)
        if check is not None:
            assert p.returncode == check, (args, p.returncode, p.stdout, p.stderr)
        return p

    def run(self, cid, *cmd, opts=(), input=b"", check=None, timeout=300):
        return self.ctr("run", "--rm", "--runtime", RUNTIME, *opts, self.image, cid, *cmd,
                        input=input, check=check, timeout=timeout)

    def close(self):
        p = self.ctr("tasks", "ls", "-q", check=None)
        for t in p.stdout.decode().split():
            self.ctr("tasks", "kill", "-s", "SIGKILL", t, check=None)
            self.ctr("tasks", "delete", "-f", t, check=None)
        p = self.ctr("containers", "ls", "-q", check=None)
        for c in p.stdout.decode().split():
            self.ctr("containers", "delete", c, check=None)
        self.proc.terminate()
        self.proc.wait(60)
        self.log.close()
        self.up.close()


def _containerd(tmp_path_factory, name, **extra_env):
    need_image()
    d = str(tmp_path_factory.mktemp(name))
    c = Containerd(d, **extra_env)
    yield c
    c.close()
    # a shim ends a moment after its last container is deleted (containerd's shim library waits
    # for its event publisher)
    try:
        wait_for(lambda: not procs_mentioning(c.sock), 30, "the shims to exit")
    except AssertionError:
        pass
    clean_home(pathlib.Path(c.strict))
    left = clean_home(pathlib.Path(c.home), under=d)
    shim_left = procs_mentioning(c.sock)
    for pid in left + shim_left:
        os.kill(pid, signal.SIGKILL)
    mounts = [l for l in open("/proc/self/mounts") if d in l]
    for l in reversed(mounts):
        subprocess.run(["umount", "-l", l.split()[1]])
    assert not left and not shim_left, f"processes left behind: {left + shim_left}"
    assert not mounts, f"mounts left behind: {mounts}"


@pytest.fixture(scope="module")
def ctd(tmp_path_factory):
    # the workspace transport capsem-vm picks on its own (auto): CAPSEM_WORKSPACE_TRANSPORT
    # of the test's environment, if any, is not passed on
    yield from _containerd(tmp_path_factory, "ctd", CAPSEM_WORKSPACE_TRANSPORT="auto")


@pytest.fixture(scope="module")
def ctd_vfs(tmp_path_factory):
    """A containerd whose pods' VMs serve the pod directory over virtio-fs even where auto would
    pick 9p (a host whose open-file limit virtiofsd cannot raise, like the build machines)."""
    if not os.access("/usr/lib/qemu/virtiofsd", os.X_OK):
        pytest.skip("no virtiofsd (qemu-system-common)")
    yield from _containerd(tmp_path_factory, "ctdvfs", CAPSEM_WORKSPACE_TRANSPORT="virtiofs")


def guest_kernel():
    return json.load(open(os.path.join(IMAGE, "manifest.json")))["kernel"]["version"]


def vm_procs(c):
    """QEMU, capsem-vm and virtiofsd processes of VMs of the module's Capsem home."""
    return procs_mentioning(os.path.join(c.home, "vms"))


def test_uname_is_the_capsem_guest_kernel(ctd):
    p = ctd.run("uname", "uname", "-r", check=0)
    assert p.stdout.decode().strip() == guest_kernel()
    assert p.stdout.decode().strip() != os.uname().release


def test_exit_status_stdout_stderr_stdin(ctd):
    p = ctd.run("st", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert p.returncode == 7
    assert p.stdout == b"out\n" and p.stderr.endswith(b"err\n"), p
    p = ctd.run("in", "sh", "-c", "cat; echo done", input=b"hello\nworld\n", check=0)
    assert p.stdout == b"hello\nworld\ndone\n"
    p = ctd.run("nf", "no-such-command")
    assert p.returncode == 127 and b"not found" in p.stderr


def test_oci_process_env_cwd(ctd):
    p = ctd.run("env", "sh", "-c", "pwd; echo $FOO", opts=("--cwd", "/tmp", "--env", "FOO=bar"),
                check=0)
    assert p.stdout == b"/tmp\nbar\n"


def test_terminal(ctd):
    # ctr -t needs a terminal of its own: script(1) gives it one
    cmd = (f"ctr -a {ctd.sock} run --rm -t --runtime {RUNTIME} {ctd.image} tty "
           "sh -c 'tty; stty size; exit 5'")
    p = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, env=ctd.env,
                       timeout=300, stdin=subprocess.DEVNULL)
    out = p.stdout.decode()
    assert "/dev/pts/" in out, out
    assert p.returncode == 5, (p.returncode, out)


def test_exec_pause_resume_stats_kill_delete(ctd):
    ctd.ctr("run", "-d", "--runtime", RUNTIME, ctd.image, "long",
            "sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done")
    try:
        assert ctd.ctr("tasks", "ls").stdout.decode().split()[-1] == "RUNNING"
        p = ctd.ctr("tasks", "exec", "--exec-id", "e1", "long", "sh", "-c",
                    "cat /etc/hostname >/dev/null; echo in-exec; exit 3", check=3)
        assert p.stdout == b"in-exec\n"
        p = ctd.ctr("tasks", "exec", "--exec-id", "e2", "--user", "1000", "--cwd", "/tmp", "long",
                    "sh", "-c", "id -u; id -g; pwd; cat", input=b"piped\n", check=0)
        assert p.stdout == b"1000\n1000\n/tmp\npiped\n"
        read = lambda: int(ctd.ctr("tasks", "exec", "--exec-id", "r", "long",
                                   "cat", "/tmp/count").stdout)
        wait_for(lambda: read() > 0, 60, "the loop to count")
        ctd.ctr("tasks", "pause", "long")
        assert "PAUSED" in ctd.ctr("tasks", "ls").stdout.decode()
        a = read()
        time.sleep(2)
        assert read() == a, "the counter moved while paused"
        m = ctd.ctr("tasks", "metrics", "long").stdout.decode()
        assert "memory.usage" in m and "pids.current" in m, m
        ctd.ctr("tasks", "resume", "long")
        assert "RUNNING" in ctd.ctr("tasks", "ls").stdout.decode()
        wait_for(lambda: read() > a, 60, "the counter to move again")
        assert vm_procs(ctd), "no VM for the running container"
        ctd.ctr("tasks", "kill", "long")
        wait_for(lambda: "STOPPED" in ctd.ctr("tasks", "ls").stdout.decode(), 60, "the task to stop")
    finally:
        ctd.ctr("tasks", "delete", "-f", "long", check=None)
        ctd.ctr("containers", "delete", "long", check=None)
    wait_for(lambda: not vm_procs(ctd), 120, "QEMU and capsem-vm to go")
    wait_for(lambda: not procs_mentioning(ctd.sock), 60, "the shim to exit")
    assert not os.listdir(os.path.join(ctd.home, "vms"))


def _start(ctd, cid, *opts):
    ctd.ctr("run", "-d", "--runtime", RUNTIME, *opts, ctd.image, cid, "sleep", "600")


def _stop(ctd, *cids):
    for cid in cids:
        ctd.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=None)
    for cid in cids:
        wait_for(lambda: "RUNNING" not in ctd.ctr("tasks", "ls").stdout.decode().split(), 60, "stop")
        ctd.ctr("tasks", "delete", cid, check=None)
        ctd.ctr("containers", "delete", cid, check=None)


def _exec(ctd, cid, script, check=0):
    return ctd.ctr("tasks", "exec", "--exec-id", "x", cid, "sh", "-c", script, check=check)


def test_two_containers_in_parallel_are_isolated(ctd):
    # two sandboxes: two VMs, started at the same time
    ts = [threading.Thread(target=_start, args=(ctd, cid)) for cid in ("iso-a", "iso-b")]
    [t.start() for t in ts]
    [t.join() for t in ts]
    try:
        _exec(ctd, "iso-a", "echo secret > /tmp/a-file")
        ha = _exec(ctd, "iso-a", "cat /proc/sys/kernel/hostname").stdout
        hb = _exec(ctd, "iso-b", "cat /proc/sys/kernel/hostname").stdout
        assert ha != hb, "both containers run in the same VM"
        assert _exec(ctd, "iso-b", "test -e /tmp/a-file", check=1)
        # each VM sees only its own container's processes
        pa = _exec(ctd, "iso-a", "ps -o args").stdout.decode().count("sleep 600")
        assert pa == 1, pa
        assert len(set(procs_mentioning(os.path.join(ctd.home, "vms")))) >= 4  # 2×(capsem-vm+QEMU)
    finally:
        _stop(ctd, "iso-a", "iso-b")


def test_containers_of_one_pod_share_one_vm(ctd):
    pod = ("--annotation", "io.kubernetes.cri.sandbox-id=pod1")
    _start(ctd, "pod1", *pod)
    _start(ctd, "pod1-app", *pod)
    try:
        ha = _exec(ctd, "pod1", "cat /proc/sys/kernel/hostname").stdout
        hb = _exec(ctd, "pod1-app", "cat /proc/sys/kernel/hostname").stdout
        assert ha == hb, "the pod's containers are in different VMs"
        _exec(ctd, "pod1", "echo mine > /tmp/pod1-file")
        _exec(ctd, "pod1-app", "test -e /tmp/pod1-file", check=1)  # own root file systems
        # one shim serves the pod: it is named after the sandbox, none after the second container
        cmds = [open(f"/proc/{pid}/cmdline", "rb").read() for pid in procs_mentioning(ctd.sock)]
        cmds = [c for c in cmds if b"containerd-shim-capsem" in c]
        assert sum(b"\0-id\0pod1\0" in c for c in cmds) == 1, cmds
        assert not any(b"\0-id\0pod1-app\0" in c for c in cmds), cmds
    finally:
        _stop(ctd, "pod1-app", "pod1")
    wait_for(lambda: not vm_procs(ctd), 120, "the pod's VM to go")


def _ledger(ctd, vm_id, table, where, args):
    db = os.path.join(ctd.home, "sessions", f"{vm_id}-1.db")
    def rows():
        if not os.path.exists(db):
            return None
        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return c.execute(f"SELECT * FROM {table} WHERE {where}", args).fetchall()
        except sqlite3.OperationalError:
            return None
        finally:
            c.close()
    return wait_for(rows, 60, f"{table} rows in the ledger")


def test_blocked_domain_refused_and_logged(ctd):
    p = ctd.run("blocked", "sh", "-c",
                "echo $CAPSEM_VM_ID; curl -sS --max-time 60 https://blocked.example/ ; echo rc=$?")
    lines = p.stdout.decode().split()
    vm_id = lines[0]
    assert lines[-1] == "rc=6", p  # CURLE_COULDNT_RESOLVE_HOST: NXDOMAIN from the host
    rows = _ledger(ctd, vm_id, "dns", "qname = ? AND decision = 'block'", ("blocked.example",))
    assert rows


def test_https_to_an_allowed_host_through_the_proxy(ctd):
    p = ctd.run("https", "sh", "-c",
                "echo $CAPSEM_VM_ID; curl -sS --max-time 120 https://upstream.test/hello", check=0)
    vm_id, body = p.stdout.decode().split("\n", 1)
    assert body == "hello from upstream\n", p
    rows = _ledger(ctd, vm_id, "net", "host = ? AND decision = 'allow'", ("upstream.test",))
    assert rows
    # the installation's CA is what made it work: it is now in the container's trust store, and
    # curl told to trust only the image's own roots (Debian's) refuses the re-signed certificate
    ca = open(os.path.join(ctd.home, "ca", "ca.crt")).read().strip()
    p = ctd.run("https-ca", "cat", "/etc/ssl/certs/ca-certificates.crt", check=0)
    assert ca in p.stdout.decode()
    p = ctd.run("https-noca", "curl", "-sS", "--max-time", "120", "--cacert",
                "/etc/ssl/debian-roots.pem", "https://upstream.test/hello")
    assert p.returncode == 60, p  # CURLE_PEER_FAILED_VERIFICATION


def test_policy_chosen_by_the_sandbox_annotation(ctd):
    p = ctd.run("strict", "sh", "-c",
                "echo $CAPSEM_VM_ID; curl -sS --max-time 60 https://upstream.test/hello; echo rc=$?",
                opts=("--annotation", "io.capsem.policy=strict"))
    lines = p.stdout.decode().split()
    assert lines[-1] == "rc=6", p  # the profile does not allow upstream.test: NXDOMAIN
    # its ledger is in the profile's home (its own capsemd), not the installation's
    old, ctd.home = ctd.home, ctd.strict
    try:
        assert _ledger(ctd, lines[0], "dns", "qname = ? AND decision = 'block'", ("upstream.test",))
    finally:
        ctd.home = old
    assert not os.path.exists(os.path.join(ctd.home, "sessions", lines[0] + "-1.db"))
    p = ctd.run("nosuch", "true", opts=("--annotation", "io.capsem.policy=nosuch"))
    assert p.returncode != 0 and b"policy profile" in p.stderr, p


def test_volumes_bind_ro_rw_and_tmpfs(ctd, tmp_path):
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "f").write_text("from the host\n")
    single = tmp_path / "single.conf"
    single.write_text("one file\n")
    p = ctd.run("vol", "sh", "-c",
                "cat /data/f; echo x > /data/g 2>/dev/null && echo wrote-ro; "
                "echo from-container > /out/h; cat /etc/single.conf; "
                "grep -c ' /scratch tmpfs ' /proc/mounts",
                opts=("--mount", f"type=bind,src={ro},dst=/data,options=rbind:ro",
                      "--mount", f"type=bind,src={rw},dst=/out,options=rbind:rw",
                      "--mount", f"type=bind,src={single},dst=/etc/single.conf,options=bind:ro",
                      "--mount", "type=tmpfs,src=tmpfs,dst=/scratch,options=size=1m"), check=0)
    assert p.stdout == b"from the host\none file\n1\n", p
    assert (rw / "h").read_text() == "from-container\n"
    assert not (ro / "g").exists()
    # nothing of the volumes stays mounted on the host
    assert not [l for l in open("/proc/self/mounts") if str(tmp_path) in l]


def test_oom_is_reported(ctd):
    ev = subprocess.Popen(["ctr", "-a", ctd.sock, "events"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, env=ctd.env)
    lines = []
    threading.Thread(target=lambda: lines.extend(iter(ev.stdout.readline, b"")), daemon=True).start()
    try:
        p = ctd.run("oom", "sh", "-c", 'a=$(head -c 400000000 /dev/zero | tr "\\0" x); echo survived',
                    opts=("--annotation", "io.capsem.memory=256M"))
        assert p.returncode == 137 and b"survived" not in p.stdout, p
        assert b"out of memory" in p.stderr
        # the container's removal is the last event of the run: the OOM event came before it
        wait_for(lambda: any(b"/containers/delete" in l and b'"oom"' in l for l in lines), 60,
                 "the container's delete event")
    finally:
        ev.terminate()
        ev.wait(30)
    assert any(b"/tasks/oom" in l and b'"container_id":"oom"' in l for l in lines), lines


def test_a_killed_shim_leaves_no_vm(ctd):
    _start(ctd, "crash")
    shims = [pid for pid in procs_mentioning(ctd.sock)
             if b"\0-id\0crash\0" in open(f"/proc/{pid}/cmdline", "rb").read()]
    assert len(shims) == 1
    assert vm_procs(ctd)
    os.kill(shims[0], signal.SIGKILL)
    # containerd sees the shim go and runs `containerd-shim-capsem-v2 delete` (Cleanup): the
    # sandbox's VM is deleted, its mounts are gone
    wait_for(lambda: not vm_procs(ctd), 120, "the VM of the dead shim to go")
    ctd.ctr("tasks", "delete", "-f", "crash", check=None)
    ctd.ctr("containers", "delete", "crash", check=None)
    wait_for(lambda: not [l for l in open("/proc/self/mounts") if ctd.home in l], 60,
             "the pod directory's mounts to go")
    assert not os.path.exists(os.path.join(ctd.shimrun, "default", "crash"))


def test_a_container_ends_with_its_init_process(ctd):
    # two containers of one pod see each other's processes (one VM): when the second one's init
    # exits, the background process it left is gone too
    pod = ("--annotation", "io.kubernetes.cri.sandbox-id=pod2")
    _start(ctd, "pod2", *pod)
    try:
        ctd.ctr("run", "--rm", "--runtime", RUNTIME, *pod, ctd.image, "pod2-bg",
                "sh", "-c", "sleep 777 & echo started", check=0)
        out = _exec(ctd, "pod2", "ps -o args").stdout.decode()
        assert "sleep 777" not in out, out
    finally:
        _stop(ctd, "pod2")


def test_provider_placeholder_in_the_container_and_swapped_by_the_proxy(ctd):
    real = KEYS["anthropic"]
    p = ctd.run("cred", "sh", "-c",
                'echo "$ANTHROPIC_API_KEY"; curl -sS --max-time 120 -o /dev/null -w "%{http_code}\\n" '
                '-H "x-api-key: $ANTHROPIC_API_KEY" -H "content-type: application/json" '
                '-d \'{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[]}\' '
                'https://api.anthropic.com/v1/messages', check=0)
    placeholder, code = p.stdout.decode().split()
    assert placeholder and real not in placeholder
    assert code == "200", p
    seen = [h for m, path, h in ctd.up.stats.requests if path == "/v1/messages"]
    assert seen and seen[-1].get("x-api-key") == real


def _host_transport():
    """What capsem-vm's auto choice gives on this host (src/vm/vmworkspace.c): virtio-fs as root
    when the open-file hard limit is at least 262,144 or can be raised to it, else 9p."""
    if os.geteuid() != 0:
        return "9p"
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] >= 262144:
        return "virtiofs"
    p = subprocess.run(["/usr/bin/python3", "-c", "import resource as r; "
                        "r.setrlimit(r.RLIMIT_NOFILE, (262144, 262144))"], capture_output=True)
    return "virtiofs" if p.returncode == 0 else "9p"


def _stop_one(ctd, cid):
    """Stop and delete one container while others run (_stop waits for every task)."""
    ctd.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=None)
    def stopped():
        for l in ctd.ctr("tasks", "ls").stdout.decode().splitlines()[1:]:
            f = l.split()
            if f and f[0] == cid:
                return f[-1] != "RUNNING"
        return True
    wait_for(stopped, 60, f"{cid} to stop")
    ctd.ctr("tasks", "delete", cid, check=None)
    ctd.ctr("containers", "delete", cid, check=None)


def _vm_of(ctd, cid):
    return _exec(ctd, cid, "echo $CAPSEM_VM_ID").stdout.decode().strip()


def _vm_mounts(ctd, vm):
    p = cli(pathlib.Path(ctd.home), "exec", vm, "--", "cat", "/proc/mounts", check=0)
    return [l.split() for l in p.stdout.decode().splitlines()]


def test_pod_directory_is_the_workspace_over_the_hosts_transport(ctd):
    # the pod's VM is created with the pod directory as its workspace, not suspendable (so not
    # over the virtio-serial port) and without the workspace's file audit and snapshots; the
    # transport is what capsem-vm could run on this host, and capsem info and the shim say it
    want = _host_transport()
    _start(ctd, "ws-a")
    try:
        vm = _vm_of(ctd, "ws-a")
        info = json.loads(cli(pathlib.Path(ctd.home), "info", vm, "--json", check=0).stdout)
        assert info["workspace_transport"] == want, info
        assert info["workspace"] == os.path.join(ctd.shimrun, "default", "ws-a"), info
        assert info["workspace_shared"] and not info["suspendable"], info
        assert info["workspace_audit"] is False and info["mounts"] == [], info
        text = cli(pathlib.Path(ctd.home), "info", vm, check=0).stdout.decode()
        assert "Shared over: " + ("virtio-fs" if want == "virtiofs" else "9p (QEMU") in text
        assert "Audit:       off (no file rows" in text, text
        ws = [m for m in _vm_mounts(ctd, vm) if m[1] == "/root/workspace"]
        assert ws and ws[0][2] == want, ws
        # the container's root and its cwd
        p = _exec(ctd, "ws-a", "pwd; ls /")
        assert p.stdout.decode().split()[0] == "/" and "bin" in p.stdout.decode().split()
        # the shim's log line names the transport (containerd logs what its shims log)
        log = open(os.path.join(ctd.d, "containerd.log"), "rb").read()
        assert f"transport={want}".encode() in log, log[-2000:]
        # no file audit: nothing the container wrote is an fs row of the VM's ledger
        _exec(ctd, "ws-a", "for i in 1 2 3 4 5; do echo $i > /tmp/w$i; done")
        cli(pathlib.Path(ctd.home), "exec", vm, "--", "true", check=0)
    finally:
        _stop(ctd, "ws-a")
    db = os.path.join(ctd.home, "sessions", f"{vm}-1.db")
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert c.execute("SELECT COUNT(*) FROM fs").fetchone()[0] == 0
    finally:
        c.close()


def test_pod_over_virtio_fs_containers_joining_later(ctd_vfs, tmp_path):
    ctd = ctd_vfs
    pod = ("--annotation", "io.kubernetes.cri.sandbox-id=vfs")
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "f").write_text("read only\n")
    _start(ctd, "vfs-a", *pod)
    try:
        vm = _vm_of(ctd, "vfs-a")
        assert json.loads(cli(pathlib.Path(ctd.home), "info", vm, "--json",
                              check=0).stdout)["workspace_transport"] == "virtiofs"
        m = {x[1]: x[2] for x in _vm_mounts(ctd, vm)}
        # the workspace, and the container's root as a submount of it (virtiofsd announces the
        # host's mounts below the shared folder: its own st_dev in the guest)
        assert m.get("/root/workspace") == "virtiofs", m
        assert m.get("/root/workspace/c/vfs-a") == "virtiofs", m
        # a container whose root is bound on the host after virtiofsd started (its namespace's
        # mounts are slaves of the host's): its files, its volumes, the OCI user's ownership
        _start(ctd, "vfs-b", *pod, "--mount", f"type=bind,src={ro},dst=/data,options=rbind:ro")
        assert _vm_of(ctd, "vfs-b") == vm
        p = _exec(ctd, "vfs-b", "cat /data/f; ls /bin/busybox; grep ' / ' /proc/mounts")
        lines = p.stdout.decode().splitlines()
        assert lines[:2] == ["read only", "/bin/busybox"], p
        assert lines[2].split()[2] == "virtiofs", p  # the root, as the container sees it
        # "1000:1000", not "1000": ctr resolves a bare uid's group by mounting the container's
        # snapshot a second time, and that overlay mount resets the running one's work
        # directory (its copy-ups fail with ENOENT from then on: containerd's, runc's alike)
        p = ctd.ctr("tasks", "exec", "--exec-id", "u", "--user", "1000:1000", "vfs-b", "sh", "-c",
                    "echo mine > /home/u/by-1000; ls -ln /home/u/by-1000", check=0)
        assert p.stdout.split()[2:4] == [b"1000", b"1000"], p
        host = os.path.join(ctd.shimrun, "default", "vfs", "c", "vfs-b", "home", "u", "by-1000")
        st = os.stat(host)
        assert (st.st_uid, st.st_gid) == (1000, 1000)  # virtiofsd (root) writes as the caller
        # the init process and the exec started right after it set the root up once
        points = [x[1] for x in _vm_mounts(ctd, vm) if x[1].startswith("/root/workspace/c/vfs-b/")]
        assert len(points) == len(set(points)), points
        # the read-only volume is read-only on the host, whatever the guest does: even the VM's
        # root, writing the pod directory's bind directly, is refused
        [n] = os.listdir(os.path.join(ctd.shimrun, "default", "vfs", "m", "vfs-b"))
        p = cli(pathlib.Path(ctd.home), "exec", vm, "--", "sh", "-c",
                f"echo x > /root/workspace/m/vfs-b/{n}/g")
        assert p.returncode != 0 and b"Read-only" in p.stderr, p
        assert not (ro / "g").exists()
        # a metadata walk of the container's root
        found = _exec(ctd, "vfs-b", "busybox find / -xdev").stdout.decode().split()
        assert len(found) > 50 and "/bin/busybox" in found and "/proc/self" not in found, found
        # the container goes: its root and volume are unmounted in the guest too (virtiofsd
        # forgets their inodes) and on the host
        _stop_one(ctd, "vfs-b")
        m = {x[1] for x in _vm_mounts(ctd, vm)}
        assert not [x for x in m if "vfs-b" in x], m
        assert not [l for l in open("/proc/self/mounts") if "/vfs/c/vfs-b" in l or str(ro) in l]
        # the same id again at once: a fresh root (never the name the guest cached for the old)
        _start(ctd, "vfs-b", *pod)
        assert _exec(ctd, "vfs-b", "test -e /home/u/by-1000", check=1)
        assert _exec(ctd, "vfs-b", "ls /bin/busybox").stdout == b"/bin/busybox\n"
        assert "/root/workspace/c/vfs-b~1" in {x[1] for x in _vm_mounts(ctd, vm)}
        _stop_one(ctd, "vfs-b")
    finally:
        _stop(ctd, "vfs-b", "vfs-a")
    wait_for(lambda: not vm_procs(ctd), 120, "the pod's VM to go")
