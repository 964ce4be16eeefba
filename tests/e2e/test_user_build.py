"""A normal user builds a Debian root file system and boots it: capsem-builder runs its layers as
root of a user namespace of its own (src/shared/userns.c: the user's uid is 0 there, its
subordinate ids of /etc/subuid and /etc/subgid are 1..65535), so mmdebstrap, tar, the npm
layer's chroot and mkfs.erofs work without root. A small config (ca-certificates, python3, one
npm package) keeps it to about a minute; the image takes the minimal image's kernel and
initramfs (--base-image).

Run as root (the suite's main run) the build runs as the user capsem-ci (made here when missing,
with subordinate ids); run as a normal user it runs as that user, which then needs subordinate
ids and newuidmap itself."""
import json
import os
import pathlib
import pwd
import shutil
import subprocess
import tempfile

import pytest

from conftest import BUILD, CAPSEM, IMAGE, need_image, procs_mentioning, stop_daemon

BUILDER = os.path.join(BUILD, "src", "builder", "capsem-builder")
USER = "capsem-ci"


def subid_line(path, name, uid):
    for ln in open(path).read().splitlines():
        f = ln.split(":")
        if len(f) == 3 and f[0] in (name, str(uid)) and int(f[2]) >= 65535:
            return ln
    return None


def ensure_user():
    """As root: capsem-ci, with a range of subordinate ids. Its (uid, gid, home)."""
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", USER], check=True)
        pw = pwd.getpwnam(USER)
    for f in ("/etc/subuid", "/etc/subgid"):
        if not os.path.exists(f):
            open(f, "a").close()
    if not subid_line("/etc/subuid", USER, pw.pw_uid) or \
            not subid_line("/etc/subgid", USER, pw.pw_gid):
        # a range after every range given so far
        end = 100000
        for f in ("/etc/subuid", "/etc/subgid"):
            for ln in open(f).read().splitlines():
                p = ln.split(":")
                if len(p) == 3:
                    end = max(end, int(p[1]) + int(p[2]))
        r = f"{end}-{end + 65535}"
        subprocess.run(["usermod", "--add-subuids", r, "--add-subgids", r, USER], check=True)
    return pw.pw_uid, pw.pw_gid, pw.pw_dir


def as_user(argv, env, timeout):
    if os.geteuid() == 0:
        argv = ["runuser", "-u", USER, "--", "env", "-i",
                *[f"{k}={v}" for k, v in env.items()], *argv]
        env = None
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)


def reachable(path):
    """Let others traverse (o+x, not list) each ancestor of path that does not allow it: a
    clone under `mktemp -d` sits in a 0700 directory (scripts/run-tests.py does the same for
    its unprivileged run)."""
    d = os.path.dirname(os.path.abspath(path))
    while d != "/":
        st = os.stat(d)
        if not st.st_mode & 0o001:
            os.chmod(d, st.st_mode | 0o001)
        d = os.path.dirname(d)


@pytest.fixture
def space():
    """A directory the builder's user owns (tmp_path is root's, 0700), removed afterwards."""
    need_image()
    if os.geteuid() == 0:
        uid, gid, home = ensure_user()
        reachable(BUILDER)
    else:
        uid, gid, home = os.getuid(), os.getgid(), os.path.expanduser("~")
    d = tempfile.mkdtemp(prefix="capsem-user-build-")
    os.chmod(d, 0o755)
    os.makedirs(os.path.join(d, "images"))
    shutil.copytree(IMAGE, os.path.join(d, "images", "minimal"))
    for root, dirs, files in os.walk(d):
        for n in dirs + files + ["."]:
            os.lchown(os.path.join(root, n), uid, gid)
    env = {"HOME": home, "USER": pwd.getpwuid(uid).pw_name, "LANG": "C.UTF-8",
           "PATH": "/usr/local/bin:/usr/bin:/bin",  # a normal user's: no sbin
           "CAPSEM_HOME": os.path.join(d, "home"), "CAPSEM_IMAGES_DIR": os.path.join(d, "images"),
           "CAPSEM_CACHE": os.path.join(d, "cache")}
    yield d, uid, env
    if os.path.isdir(os.path.join(d, "home")):
        stop_daemon(pathlib.Path(d) / "home")
    left = procs_mentioning(d)
    # files of subordinate ids (a staging tree) can only be left by a failed build; the user
    # removes them in its namespace
    as_user(["unshare", "--map-root-user", "--map-auto", "rm", "-rf", d], env, 300)
    shutil.rmtree(d, ignore_errors=True)
    assert not left, left


def test_a_normal_user_builds_and_boots_a_rootfs(space):
    d, uid, env = space
    cfg = os.path.join(d, "cfg")
    p = as_user([BUILDER, "new", cfg, "--name", "tiny"], env, 60)
    assert p.returncode == 0, p.stderr
    with open(os.path.join(cfg, "packages.toml"), "w") as f:
        f.write('[packages]\napt = ["ca-certificates"]\npython = ["python3", "python3-venv"]\n'
                'npm = ["is-number@7"]\n')
    with open(os.path.join(cfg, "providers.toml"), "w") as f:
        f.write("# none: a small image\n")
    os.chown(os.path.join(cfg, "packages.toml"), uid, -1)
    os.chown(os.path.join(cfg, "providers.toml"), uid, -1)
    p = as_user([BUILDER, "image", "--config", cfg, "--base-image",
                 os.path.join(d, "images", "minimal"), "--json"], env, 1800)
    assert p.returncode == 0, p.stderr[-4000:]
    if os.geteuid() == 0:
        assert "building as root of a user namespace" in p.stderr, p.stderr[-2000:]
    made = json.loads(p.stdout.strip().splitlines()[-1])
    assert made["name"] == "tiny" and not made["rootfs"]["cached"], made
    assert os.path.exists(os.path.join(made["dir"], "manifest.json")), made
    print(f"\nrootfs built by a normal user in {made['rootfs']['seconds']:.0f} s")
    # everything it left is the user's own, and no staging tree is left
    cache = env["CAPSEM_CACHE"]
    foreign = [os.path.join(r, n) for r, ds, fs in os.walk(cache) for n in ds + fs
               if os.lstat(os.path.join(r, n)).st_uid != uid]
    assert not foreign, foreign[:10]
    staging = [os.path.join(r, n) for r, ds, _ in os.walk(cache) for n in ds if ".tmp-" in n]
    assert not staging, staging
    # a VM of it: Debian's python3, the npm package, root-owned system files, the shadow group
    p = as_user([CAPSEM, "run", "--image", "tiny", "--", "sh", "-c",
                 "python3 -c 'import ssl; print(ssl.OPENSSL_VERSION.split()[0])'; "
                 "node -e 'console.log(require(\"/usr/local/lib/node_modules/is-number\")(5))'; "
                 "stat -c '%u:%g %n' /etc/passwd /usr/bin/apt; cat /etc/debian_version"],
                env, 600)
    assert p.returncode == 0, (p.stdout, p.stderr)
    out = p.stdout.splitlines()
    assert out[0] == "OpenSSL" and out[1] == "true", out
    assert out[2] == "0:0 /etc/passwd" and out[3] == "0:0 /usr/bin/apt", out
    assert out[4].startswith("12."), out
