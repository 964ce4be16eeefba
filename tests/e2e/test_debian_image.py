"""The Debian rootfs image: capsem-vm --rootfs boots the squashfs under an overlay and the agent
runs commands in it (python3, node, git, curl), with the same /root persistence as the minimal
image. Boot and start-up times are printed (pytest -s shows them).

The image is IMAGES/debian, installed by `make image-debian`; when it is missing the test builds
it with capsem-builder (cached; a cold rootfs build needs root, network and a few minutes).
"""
import json
import os
import re
import shutil
import subprocess

import pytest

import conftest

import capsem_client as cc
from conftest import BUILD, IMAGES, ROOT, procs_mentioning

DEBIAN = os.path.join(IMAGES, "debian")
MINIMAL = os.path.join(IMAGES, "minimal")
BUILDER = os.path.join(BUILD, "src", "builder", "capsem-builder")
GUEST_BIN = os.environ.get("CAPSEM_GUEST_BIN") or os.path.join(
    os.environ.get("CAPSEM_GUEST_BUILD") or os.path.join(ROOT, "build-guest"),
    "src", "guest", "capsem-guest")
MKFS = shutil.which("mkfs.ext4") or "/usr/sbin/mkfs.ext4"


def ensure_debian_image():
    # an image from this builder records what is inside (build.json); an older one is rebuilt
    if os.path.exists(os.path.join(DEBIAN, "build.json")):
        return
    r = subprocess.run([BUILDER, "image", "--rootfs", "--guest-bin", GUEST_BIN,
                        "--images-dir", IMAGES], capture_output=True, timeout=3600)
    assert r.returncode == 0, r.stderr.decode()[-3000:]


def VM(vmdir, image, *extra):
    """capsem-vm started directly with an image directory's assets, 2 CPUs and 1G by default."""
    return conftest.VM(vmdir, "--cpus", "2", "--memory", "1G", *extra, image=image)


def make_disk(path, size=128 << 20):
    with open(path, "wb") as f:
        f.truncate(size)
    subprocess.run([MKFS, "-q", "-F", str(path)], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    ensure_debian_image()
    d = tmp_path_factory.mktemp("debian")
    v = VM(d / "vm", DEBIAN, "--memory", "2G")
    yield v
    assert v.stop() == 0
    assert not procs_mentioning(str(d)), "QEMU or capsem-vm left behind"


def ok(r):
    assert r.status == 0, r
    return r.stdout.decode()


def test_boot_stages(deb):
    st = deb.stages()
    assert "rootfs" in st and "overlay" in st, st
    assert "rootfs_failed" not in st
    print(f"\ndebian: boot to agent ready {deb.ready['boot_ms']:.0f} ms "
          f"(rootfs mounted at {st['rootfs'] / 1000:.0f} ms, overlay {st['overlay'] / 1000:.0f} "
          f"ms of guest time)")


def test_python(deb):
    out = ok(deb.sh("python3 -c 'import ssl, sys; print(sys.version); print(ssl.OPENSSL_VERSION)'"))
    assert out.startswith("3."), out
    assert "OpenSSL" in out


def test_node(deb):
    out = ok(deb.sh("node -e 'console.log(process.version)'")).strip()
    m = re.fullmatch(r"v(\d+)\.\d+\.\d+", out)
    assert m and int(m.group(1)) >= 22, out
    assert ok(deb.sh("command -v node")).strip() == "/usr/local/bin/node"
    assert re.match(r"\d+\.", ok(deb.sh("npm --version")))


def test_git_and_curl(deb):
    ok(deb.sh("git init -q /tmp/r && git -C /tmp/r status"))
    assert ok(deb.sh("curl --version")).startswith("curl ")


def test_rootfs_read_only_under_overlay(deb):
    mounts = ok(deb.sh("cat /proc/mounts"))
    sq = [l.split() for l in mounts.splitlines() if l.split()[2] in ("erofs", "squashfs")]
    assert sq and sq[0][1] == "/mnt/capsem-rootfs" and "ro" in sq[0][3].split(","), mounts
    root = [l.split() for l in mounts.splitlines() if l.split()[1] == "/"]
    assert root and root[-1][2] == "overlay", mounts
    ok(deb.sh("touch /usr/x && test -f /usr/x && rm /usr/x"))
    r = deb.sh("touch /mnt/capsem-rootfs/x")
    assert r.status != 0 and b"Read-only" in r.stderr, r


def test_no_setuid_files(deb):
    assert ok(deb.sh("find / -xdev -perm /6000")) == ""


def test_start_times(deb):
    # guest-side wall time of one start, measured by the shell around it (TCG: slow)
    out = ok(deb.sh("for c in 'python3 -c pass' 'node -e 0'; do "
                    "a=$(date +%s%N); $c; b=$(date +%s%N); echo \"$c $(( (b-a)/1000000 ))\"; "
                    "done"))
    print("\n" + "".join(f"start time in the guest: {l} ms\n" for l in out.splitlines()), end="")


def test_boot_time_vs_minimal(tmp_path):
    ensure_debian_image()
    times = {}
    for name, image in (("minimal", MINIMAL), ("debian", DEBIAN)):
        v = VM(tmp_path / name, image)
        try:
            ok(v.sh("true"))
            times[name] = v.ready["boot_ms"]
        finally:
            assert v.stop() == 0
    print(f"\nboot to agent ready: minimal {times['minimal']:.0f} ms, "
          f"debian {times['debian']:.0f} ms")


def test_root_and_overlay_persist_on_disk(tmp_path):
    ensure_debian_image()
    disk = make_disk(tmp_path / "disk.img")
    v = VM(tmp_path / "vm1", DEBIAN, "--disk", str(disk))
    try:
        assert "disk" in v.stages() and "overlay" in v.stages(), v.stages()
        # a new disk's /root is seeded with the image's AI CLI settings
        ok(v.sh("test -f /root/.claude/settings.json && test -f /root/.codex/config.toml"))
        ok(v.sh("echo kept > /root/f && echo sys > /usr/local/marker && sync"))
        # the overlay's upper directory is on the disk, not in RAM
        assert "upperdir=/mnt/capsem-disk/overlay/upper" in ok(v.sh("cat /proc/mounts"))
    finally:
        assert v.stop() == 0
    v = VM(tmp_path / "vm2", DEBIAN, "--disk", str(disk))
    try:
        assert ok(v.sh("cat /root/f /usr/local/marker")) == "kept\nsys\n"
        ok(v.sh("python3 -c pass && node -e 0"))
    finally:
        assert v.stop() == 0
    r = subprocess.run(["e2fsck", "-fn", str(disk)], capture_output=True)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()


def test_doctor_passes(deb):
    r = deb.sh("capsem-doctor --json", timeout_ms=600000, io_timeout=660)
    j = json.loads(r.stdout)
    failed = [c for c in j["checks"] if c["status"] == "fail"]
    assert r.status == 0 and j["ok"] and not failed, failed
    st = {c["name"]: c["status"] for c in j["checks"]}
    for name in ("rootfs-ro", "setid", "modules", "devmem", "nics", "python3", "node", "npm",
                 "git", "git-init", "curl", "cli:claude", "cli:gemini", "cli:codex"):
        assert st.get(name) == "pass", (name, j)
    print("\n" + "".join(f"doctor {c['name']}: {c['status']} {c['ms']} ms {c['detail']}\n"
                         for c in j["checks"] if c["ms"]), end="")
    # the table form, and its exit status
    r = deb.sh("capsem-doctor", timeout_ms=600000, io_timeout=660)
    assert r.status == 0 and b"0 failed" in r.stdout, r


@pytest.mark.parametrize("cli,want", [("claude", r"\d+\.\d+\.\d+ \(Claude Code\)"),
                                      ("gemini", r"\d+\.\d+\.\d+"),
                                      ("codex", r"codex-cli \d+\.\d+\.\d+")])
def test_ai_cli_version(deb, cli, want):
    out = ok(deb.sh(f"a=$(date +%s%N); {cli} --version; b=$(date +%s%N); "
                    f"echo ms=$(( (b-a)/1000000 ))", timeout_ms=120000, io_timeout=180))
    assert re.search(want, out), out
    print(f"\n{cli} --version in the guest: {out.split('ms=')[-1].strip()} ms")


def test_ai_clis_preconfigured(deb):
    env = ok(deb.sh("cat /etc/environment"))
    for var in ("DISABLE_AUTOUPDATER=1", "DISABLE_TELEMETRY=1", "CAPSEM_SANDBOX=1"):
        assert var in env, env
    assert 'approval_policy = "never"' in ok(deb.sh("cat /root/.codex/config.toml"))
    assert '"enableAutoUpdate": false' in ok(deb.sh("cat /root/.gemini/settings.json"))
    assert "bypassPermissions" in ok(deb.sh("cat /root/.claude/settings.json"))
    # the banner of interactive shells; exported variables in login shells
    r = deb.sh("bash -ic true")
    assert b"Capsem sandbox VM" in r.stdout + r.stderr, r
    assert ok(deb.sh("bash -lc 'echo $DISABLE_TELEMETRY'")).strip() == "1"


def test_python_node_git_work(deb):
    ok(deb.sh("python3 -c 'import ssl, json, venv; print(ssl.OPENSSL_VERSION)'"))
    assert ok(deb.sh("node -e 'console.log(require(\"os\").arch())'")).strip() == "x64"
    ok(deb.sh("cd /tmp && rm -rf g && git init -q g && cd g && git -c user.email=a@b "
              "-c user.name=a commit -q --allow-empty -m x && git log --oneline"))


def test_image_records_versions(deb):
    j = json.loads(ok(deb.sh("cat /etc/capsem/image.json")))
    assert set(j["cli_versions"]) == {"claude", "gemini", "codex"}, j["cli_versions"]
    assert j["node_release"].startswith("v2"), j["node_release"]
    assert j["config"]["image"]["name"] == "debian"
    info = json.load(open(os.path.join(DEBIAN, "build.json")))
    assert info["cli_versions"] == j["cli_versions"]
    r = subprocess.run([BUILDER, "inspect", DEBIAN, "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ins = json.loads(r.stdout)
    assert ins["verified"] and ins["versions"]["clis"] == j["cli_versions"], ins
    assert ins["assets"]["rootfs"]["size"] > 0 and len(ins["versions"]["dpkg"]) > 100
