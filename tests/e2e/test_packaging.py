"""The Debian package (issue 15): `make deb`, lintian, the man pages and completion, the systemd
user unit, reproducibility, installing into a fresh Debian 12 root and running a VM from the
installed files only, `capsem setup`, `capsem update` against a local HTTP server (good
manifest, bad signature, unsigned, wrong hash, truncated downloads, an older version, rollback,
a newer package through apt), `capsem uninstall --purge` and purging the package.

The root is made with mmdebstrap (Debian 12, the package's Depends from apt; cached as a tarball
under ~/.cache/capsem/test-chroot keyed by the Depends line), entered with chroot in a private
mount namespace (/dev, /proc, /sys bound), as root: QEMU runs there under TCG. Nothing of the
source tree is on PATH or in the environment inside it.

The package build is incremental (build-deb/); the reproducibility check builds again from a
clean clone of HEAD in another directory and compares bytes (skipped when the work tree has
uncommitted changes: the clone would build something else). Timings are printed and written to
bench/results/package.json.
"""
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time

import pytest

from conftest import ROOT

CACHE = os.path.join(os.environ.get("CAPSEM_CACHE", os.path.expanduser("~/.cache/capsem")),
                     "test-chroot")
RESULTS = {}
NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="chroot and mmdebstrap need root")


def run(cmd, check=True, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    p = subprocess.run(cmd, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
    return p


def save_results():
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "package.json"), "w") as f:
        json.dump(RESULTS, f, indent=2)


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    t = time.time()
    run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "mkdeb.py"), "--out", str(out)],
        capture_output=False)
    RESULTS["build_seconds"] = round(time.time() - t, 1)
    debs = [p for p in out.iterdir() if p.name.endswith(".deb")]
    assert len(debs) == 1, debs
    RESULTS["deb_bytes"] = debs[0].stat().st_size
    return debs[0]


@pytest.fixture(scope="module")
def unpacked(deb, tmp_path_factory):
    d = tmp_path_factory.mktemp("unpacked")
    run(["dpkg-deb", "-x", str(deb), str(d)])
    return d


def field(deb, name):
    return run(["dpkg-deb", "-f", str(deb), name]).stdout.strip()


def test_contents_and_depends(deb, unpacked):
    files = run(["dpkg-deb", "-c", str(deb)]).stdout
    for path in ("./usr/bin/capsem", "./usr/bin/capsemd", "./usr/bin/capsem-mcp",
                 "./usr/bin/capsem-builder", "./usr/libexec/capsem/capsem-vm",
                 "./usr/libexec/capsem/capsem-guest",
                 "./usr/share/capsem/images/minimal/vmlinux",
                 "./usr/share/capsem/images/minimal/initrd.img",
                 "./usr/share/capsem/images/minimal/manifest.json",
                 "./usr/share/capsem/guest/config/", "./usr/share/capsem/guest/kernel/x86_64.config",
                 "./usr/share/capsem/update.pub", "./usr/lib/systemd/user/capsemd.service",
                 "./usr/share/bash-completion/completions/capsem",
                 "./usr/share/zsh/vendor-completions/_capsem", "./etc/capsem/corp.toml",
                 "./usr/share/doc/capsem/copyright", "./usr/share/doc/capsem/changelog.gz",
                 "./usr/share/man/man1/capsem.1.gz", "./usr/share/man/man1/capsem-setup.1.gz",
                 "./usr/bin/containerd-shim-capsem-v2", "./usr/libexec/capsem/capsem-ctr-init",
                 "./usr/share/man/man8/containerd-shim-capsem-v2.8.gz",
                 "./usr/share/doc/capsem/examples/kubernetes/containerd-config.toml",
                 "./usr/share/doc/capsem/examples/kubernetes/containerd-capsem.conf",
                 "./usr/share/doc/capsem/examples/kubernetes/runtimeclass.yaml",
                 "./usr/share/doc/capsem/examples/kubernetes/pod-example.yaml"):
        assert re.search(r"\s" + re.escape(path) + r"(\s|$)", files, re.M), path
    # owners and times fixed: root/root, the commit's time
    assert all(" root/root " in l for l in files.splitlines()), "owners must be root/root"
    depends = field(deb, "Depends")
    for lib in ("libc6", "libuv1", "libjansson4", "libssl3", "libsqlite3-0", "libcurl4",
                "qemu-system-x86", "e2fsprogs"):
        assert lib in depends, (lib, depends)
    conffiles = run(["dpkg-deb", "-I", str(deb), "conffiles"]).stdout
    assert conffiles.strip() == "/etc/capsem/corp.toml"
    # the shipped corp file is an empty layer: every line a comment
    corp = (unpacked / "etc/capsem/corp.toml").read_text()
    assert all(not l.strip() or l.startswith("#") for l in corp.splitlines())
    # the version comes from one place: meson.build = the package = `capsem version`
    meson = re.search(r"version:\s*'([^']+)'", open(os.path.join(ROOT, "meson.build")).read())
    assert field(deb, "Version") == meson.group(1)
    v = run([str(unpacked / "usr/bin/capsem"), "version", "--json"],
            env=dict(os.environ, CAPSEM_HOME=str(unpacked / "h"))).stdout
    assert json.loads(v)["client"]["version"] == meson.group(1)
    # no build path in any binary
    for b in ("usr/bin/capsem", "usr/bin/capsemd", "usr/bin/capsem-builder",
              "usr/libexec/capsem/capsem-vm", "usr/libexec/capsem/capsem-guest",
              "usr/bin/containerd-shim-capsem-v2", "usr/libexec/capsem/capsem-ctr-init"):
        assert ROOT.encode() not in (unpacked / b).read_bytes(), b
    # the shim (Go): static, no VCS stamp, and it looks for its guest helper where the package
    # puts it (-X main.helperDir); it runs (-v: containerd's shim library answers)
    shim = unpacked / "usr/bin/containerd-shim-capsem-v2"
    assert b"/usr/libexec/capsem" in shim.read_bytes()
    if shutil.which("go"):
        info = run(["go", "version", "-m", str(shim)]).stdout
        assert "-trimpath=true" in info and "vcs" not in info, info
    assert "Go version" in run([str(shim), "-v"]).stdout
    assert "containerd" in field(deb, "Suggests")
    # size and the biggest contributors
    sizes = []
    for dirpath, _, fs in os.walk(unpacked):
        for f in fs:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                sizes.append((os.path.getsize(p), os.path.relpath(p, unpacked)))
    sizes.sort(reverse=True)
    RESULTS["installed_bytes"] = sum(s for s, _ in sizes)
    RESULTS["largest_files"] = [{"path": p, "bytes": s} for s, p in sizes[:8]]
    save_results()


def test_lintian_clean(deb):
    if not shutil.which("lintian"):
        pytest.fail("lintian is not installed (scripts/install-deps.sh installs it)")
    p = run(["lintian", "--pedantic", "--fail-on", "error,warning", str(deb)], check=False)
    tags = [l for l in p.stdout.splitlines() if re.match(r"^[EW]: ", l)]
    assert p.returncode == 0 and not tags, p.stdout + p.stderr


def test_man_pages_render(unpacked):
    man1 = unpacked / "usr/share/man/man1"
    pages = sorted(p.name for p in man1.iterdir())
    capsem = str(unpacked / "usr/bin/capsem")
    cmds = re.findall(r"^  ([a-z]+) ", run([capsem, "--help"]).stdout, re.M)
    for c in cmds:
        if c != "help":
            assert f"capsem-{c}.1.gz" in pages, c
    for p in ("capsem.1.gz", "capsemd.1.gz", "capsem-mcp.1.gz", "capsem-builder.1.gz"):
        assert p in pages
    # the shim's page (section 8, written by hand) renders the same way
    shim_page = unpacked / "usr/share/man/man8/containerd-shim-capsem-v2.8.gz"
    for p in [man1 / p for p in pages] + [shim_page]:
        r = run(["man", "--warnings", "-l", str(p)],
                env=dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MANPAGER="cat"))
        assert not r.stderr.strip(), (p, r.stderr)
        assert "NAME" in r.stdout and "SYNOPSIS" in r.stdout, p
    # the same text as --help: an option of capsem run appears in its page
    text = run(["man", "-l", str(man1 / "capsem-run.1.gz")],
               env=dict(os.environ, MANWIDTH="200", MANPAGER="cat")).stdout
    assert "--workspace" in text and "--timeout" in text


def test_completion_loads(unpacked):
    bash = unpacked / "usr/share/bash-completion/completions/capsem"
    script = (f"source {bash}; complete -p capsem; COMP_WORDS=(capsem se); COMP_CWORD=1; "
              "_capsem; echo \"${COMPREPLY[@]}\"; COMP_WORDS=(capsem run --work); COMP_CWORD=2; "
              "_capsem; echo \"${COMPREPLY[@]}\"")
    out = run(["bash", "-c", script]).stdout.splitlines()
    assert out[0].startswith("complete -o default -F _capsem capsem")
    assert "setup" in out[1].split()
    assert out[2].split() == ["--workdir", "--workspace"]
    zsh = unpacked / "usr/share/zsh/vendor-completions/_capsem"
    assert zsh.read_text().startswith("#compdef capsem")
    if shutil.which("zsh"):
        run(["zsh", "-n", str(zsh)])


def test_user_unit_verifies(unpacked, tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    unit = unpacked / "usr/lib/systemd/user/capsemd.service"
    text = unit.read_text()
    assert "ExecStart=/usr/bin/capsemd\n" in text
    # verify runs ExecStart='s binary check and `man` for Documentation=: point both at the
    # unpacked package (the installed root is verified as is in test_installed_setup_and_run)
    copy = tmp_path / "capsemd.service"
    copy.write_text(text.replace("/usr/bin/capsemd", str(unpacked / "usr/bin/capsemd")))
    p = run(["systemd-analyze", "verify", "--user", str(copy)], check=False,
            env=dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path),
                     MANPATH=str(unpacked / "usr/share/man")))
    assert p.returncode == 0 and not p.stderr.strip(), p.stderr


def test_reproducible(deb, tmp_path):
    dirty = run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"]).stdout
    if dirty.strip():
        pytest.skip("uncommitted changes: a clean clone of HEAD would build something else")
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", "--no-hardlinks", ROOT, str(clone)])
    run(["git", "-C", str(clone), "checkout", "-q",
         run(["git", "-C", ROOT, "rev-parse", "HEAD"]).stdout.strip()])
    out = tmp_path / "dist"
    t = time.time()
    run(["/usr/bin/python3", str(clone / "scripts/mkdeb.py"), "--out", str(out)],
        capture_output=False)
    RESULTS["clean_build_seconds"] = round(time.time() - t, 1)
    save_results()
    other = out / deb.name
    a, b = deb.read_bytes(), other.read_bytes()
    assert a == b, f"two builds of one commit differ: {hashlib.sha256(a).hexdigest()} vs " \
                   f"{hashlib.sha256(b).hexdigest()} (diffoscope {deb} {other})"


# ---- capsem update against a local HTTP server ----

class Channel:
    """A release channel on 127.0.0.1: files in memory, Range requests, and faults (a file cut
    short for its first N requests, or always)."""

    def __init__(self):
        self.files = {}
        self.cut = {}  # path -> [bytes to send, requests left to cut (-1: always)]
        self.ranges = []
        ch = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                data = ch.files.get(path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    m = re.match(r"bytes=(\d+)-$", rng)
                    start = int(m.group(1))
                    ch.ranges.append((path, start))
                body = data[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = ch.cut.get(path)
                if cut and cut[1] != 0:
                    cut[1] -= 1
                    self.wfile.write(body[:max(0, cut[0] - start)])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def keys(tmp_path):
    """A dev signing key made for this test (never committed), and a second, wrong one."""
    k = {}
    for n in ("good", "bad"):
        key = tmp_path / f"{n}.key"
        run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(key)])
        run(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(tmp_path / f"{n}.pub")])
        k[n] = key
    k["pub"] = tmp_path / "good.pub"
    return k


def sign(key, data, tmp_path):
    m = tmp_path / "m.json"
    m.write_bytes(data)
    run(["openssl", "pkeyutl", "-sign", "-rawin", "-inkey", str(key), "-in", str(m), "-out",
         str(tmp_path / "m.sig")])
    return (tmp_path / "m.sig").read_bytes()


def publish(ch, keys, tmp_path, version, image_dir, key="good", tamper=None, package=None,
            signed=True):
    """Put image_dir's files and a manifest for version on the channel."""
    assets = []
    for f in ("vmlinux", "initrd.img", "manifest.json"):
        data = open(os.path.join(image_dir, f), "rb").read()
        ch.files[f"/{version}/{f}"] = data
        assets.append({"file": f, "url": f"{version}/{f}", "size": len(data),
                       "sha256": hashlib.sha256(data).hexdigest()})
    if tamper:
        tamper(assets)
    m = {"format": 1, "channel": "test", "version": version,
         "images": {"minimal": {"assets": assets}}}
    if package:
        data = open(package, "rb").read()
        ch.files[f"/{os.path.basename(package)}"] = data
        m["package"] = {"url": os.path.basename(package), "size": len(data),
                        "sha256": hashlib.sha256(data).hexdigest()}
    text = json.dumps(m, indent=1).encode()
    ch.files["/channel.json"] = text
    if signed:
        ch.files["/channel.json.sig"] = sign(keys[key], text, tmp_path)
    else:
        ch.files.pop("/channel.json.sig", None)
    return ch.url + "/channel.json"


@pytest.fixture
def upd(tmp_path, keys, unpacked):
    """capsem update from the unpacked package (the build tree is not used), a private home."""
    ch = Channel()
    home = tmp_path / "home"
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(tmp_path), "LC_ALL": "C.UTF-8",
           "CAPSEM_HOME": str(home), "CAPSEM_UPDATE_KEY": str(keys["pub"]),
           "CAPSEM_SYSTEM_IMAGES_DIR": str(unpacked / "usr/share/capsem/images")}

    def update(*args):
        p = run([str(unpacked / "usr/bin/capsem"), "update", "--json", "--no-package", *args],
                check=False, env=env)
        return p.returncode, json.loads(p.stdout) if p.stdout.strip() else None, p.stderr

    yield ch, home, update
    ch.close()


def snapshot(d):
    res = {}
    for dirpath, _, fs in os.walk(d):
        if "/.downloads" in dirpath:
            continue
        for f in fs:
            p = os.path.join(dirpath, f)
            res[os.path.relpath(p, d)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return res


def test_update_images(upd, keys, tmp_path, unpacked):
    ch, home, update = upd
    images = home / "images"
    src = unpacked / "usr/share/capsem/images/minimal"
    # a good manifest: only reported without --yes, installed with it
    url = publish(ch, keys, tmp_path, "9.0.0", src)
    rc, j, err = update("--channel", url)
    assert rc == 0 and j["newer"] and j["images"][0]["action"] == "install", (j, err)
    assert not images.exists() or not (images / "minimal").exists()
    rc, j, err = update("--channel", url, "--yes")
    assert rc == 0 and j["images"][0]["action"] == "installed" and j["changed"], (j, err)
    assert json.loads((images / "minimal/release.json").read_text())["version"] == "9.0.0"
    run([str(unpacked / "usr/bin/capsem-builder"), "verify",
         str(images / "minimal")])
    good = snapshot(images)
    # again: nothing newer
    rc, j, err = update("--channel", url, "--yes")
    assert rc == 0 and j["images"][0]["action"] == "current" and not j["changed"]

    # a bad signature, an unsigned manifest: nothing changes, and it says why
    url = publish(ch, keys, tmp_path, "9.1.0", src, key="bad")
    rc, j, err = update("--channel", url, "--yes")
    assert rc == 1 and "signature does not verify" in j["error"], j
    url = publish(ch, keys, tmp_path, "9.1.0", src, signed=False)
    rc, j, err = update("--channel", url, "--yes")
    assert rc == 1 and "unsigned manifest is never used" in j["error"], j
    assert snapshot(images) == good

    # a wrong hash (validly signed): the download is refused, nothing changes
    def wrong(assets):
        assets[1]["sha256"] = "0" * 64
    url = publish(ch, keys, tmp_path, "9.1.0", src, tamper=wrong)
    rc, j, err = update("--channel", url, "--yes")
    assert rc == 1 and "SHA-256" in j["error"] and "nothing was changed" in j["error"], j
    assert snapshot(images) == good
    assert not [p for p in os.listdir(images) if p.startswith(".stage-")]

    # a file always cut short: retried with resume, then refused; nothing changes
    url = publish(ch, keys, tmp_path, "9.1.0", src)
    ch.cut["/9.1.0/vmlinux"] = [1 << 20, -1]
    rc, j, err = update("--channel", url, "--yes")
    assert rc == 1 and "bytes" in j["error"], j
    assert snapshot(images) == good
    # cut short twice, then whole: resumed from where it stopped, installed
    ch.ranges.clear()
    ch.cut["/9.1.0/vmlinux"] = [1 << 20, 2]
    rc, j, err = update("--channel", url, "--yes")
    assert rc == 0 and j["images"][0]["action"] == "updated", (j, err)
    assert ("/9.1.0/vmlinux", 1 << 20) in ch.ranges, ch.ranges
    assert json.loads((images / "minimal/release.json").read_text())["version"] == "9.1.0"
    assert (images / ".minimal.previous").is_dir()

    # an older version: refused without --rollback
    url = publish(ch, keys, tmp_path, "0.0.1", src)
    rc, j, err = update("--channel", url, "--yes")
    assert rc == 0 and "refusing a downgrade" in j["refused"] and not j["changed"], j
    assert json.loads((images / "minimal/release.json").read_text())["version"] == "9.1.0"

    # rollback: the image the last update replaced comes back (and forward again)
    rc, j, err = update("--rollback", "--yes")
    assert rc == 0 and j["images"][0]["action"] == "rolled back", (j, err)
    assert json.loads((images / "minimal/release.json").read_text())["version"] == "9.0.0"
    assert snapshot(images / "minimal") == {k[len("minimal/"):]: v for k, v in good.items()
                                            if k.startswith("minimal/")}


# ---- the package installed into a fresh Debian 12 root ----

class Root:
    def __init__(self, path):
        self.path = path

    def sh(self, script, check=True, timeout=900, env=None):
        """script in the root, as root, in a private mount namespace with /dev, /proc, /sys."""
        e = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/root",
             "LC_ALL": "C.UTF-8", "TERM": "dumb", "DEBIAN_FRONTEND": "noninteractive"}
        e.update(env or {})
        envs = " ".join(f"{k}='{v}'" for k, v in e.items())
        r = self.path
        # the root a mount point of its own (virtiofsd makes "/" a slave mount and
        # pivot_roots: a plain directory as "/" is refused with EINVAL)
        wrapper = (f"mount --bind {r} {r} && "
                   f"mount --rbind /dev {r}/dev && mount -t proc proc {r}/proc && "
                   f"mount -t sysfs sys {r}/sys && mount -t tmpfs tmp {r}/tmp && "
                   f"exec chroot {r} /usr/bin/env -i {envs} /bin/sh -c \"$0\"")
        return run(["unshare", "--mount", "--propagation", "private", "--fork", "sh", "-c",
                    wrapper, script], check=check, timeout=timeout)

    def kill_all(self):
        """Every process whose root is this tree (a daemon or VM left by a failed test)."""
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{pid}/root") == str(self.path):
                    os.kill(int(pid), 9)
            except OSError:
                pass


def base_tar(deb):
    """A Debian 12 root with the package's dependencies (and man-db, systemd for
    systemd-analyze) from apt, cached."""
    depends = field(deb, "Depends")
    names = sorted({re.split(r"[ (]", d.strip())[0] for d in depends.split(",")} |
                   {"man-db", "bash", "systemd"})
    key = hashlib.sha256(" ".join(names).encode()).hexdigest()[:16]
    tar = os.path.join(CACHE, f"bookworm-{key}.tar")
    if not os.path.exists(tar):
        os.makedirs(CACHE, exist_ok=True)
        t = time.time()
        run(["mmdebstrap", "--mode=root", "--variant=apt", "--format=tar",
             "--include=" + ",".join(names), "--aptopt=Acquire::Languages \"none\"",
             "--aptopt=APT::Install-Recommends \"false\"", "bookworm", tar + ".tmp"],
            capture_output=False, timeout=3600)
        os.rename(tar + ".tmp", tar)
        RESULTS["chroot_seconds"] = round(time.time() - t, 1)
    return tar


@pytest.fixture(scope="module")
def installed(deb, tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("installing into a chroot needs root")
    if not shutil.which("mmdebstrap"):
        pytest.fail("mmdebstrap is not installed")
    tar = base_tar(deb)
    path = tmp_path_factory.mktemp("debian12")
    run(["tar", "--numeric-owner", "-C", str(path), "-xf", tar])
    root = Root(path)
    shutil.copy(deb, path / "tmp.deb")
    t0 = time.time()
    root.sh("dpkg -i /tmp.deb && rm /tmp.deb")
    RESULTS["dpkg_i_seconds"] = round(time.time() - t0, 2)
    root.t_installed = t0
    yield root
    root.kill_all()
    save_results()


@NEEDS_ROOT
def test_installed_setup_and_run(installed):
    r = installed
    # the first sandboxed command right after dpkg -i, with the package's minimal image
    p = r.sh("capsem run -- uname -a")
    RESULTS["dpkg_i_to_first_command_seconds"] = round(time.time() - r.t_installed, 1)
    assert "6.1" in p.stdout and "Linux" in p.stdout, p.stdout + p.stderr
    # nothing of the source tree: the binaries found their helpers and image in the package
    p = r.sh("capsem doctor --json")
    checks = {c["check"]: c for c in json.loads(p.stdout)["checks"]}
    assert checks["capsem-vm"]["detail"] == "/usr/libexec/capsem/capsem-vm"
    assert checks["image"]["detail"].startswith("/usr/share/capsem/images/minimal")
    p = r.sh("capsem --help && capsem setup --help && man -w capsem-setup && "
             "bash -c 'source /usr/share/bash-completion/completions/capsem && complete -p capsem'")
    assert "capsem setup" in p.stdout
    # the containerd shim is where containerd looks (PATH), beside the capsemd it starts, with
    # its guest helper where it looks for it (not beside it: /usr/bin is for commands)
    p = r.sh("command -v containerd-shim-capsem-v2 && command -v capsemd && "
             "man -w 8 containerd-shim-capsem-v2 "
             "&& test -x /usr/libexec/capsem/capsem-ctr-init && "
             "test ! -e /usr/bin/capsem-ctr-init && containerd-shim-capsem-v2 -v")
    assert p.stdout.split()[:2] == ["/usr/bin/containerd-shim-capsem-v2", "/usr/bin/capsemd"], \
        p.stdout
    # setup, non-interactive: a key in the environment is found, not stored without
    # --store-keys, never printed; the debian image step (root, but no mmdebstrap here:
    # Recommends) is asked for the minimal one; no systemd user manager in a chroot
    t = time.time()
    p = r.sh("capsem setup --non-interactive --image minimal --json",
             env={"ANTHROPIC_API_KEY": "sk-ant-test-secret-123"}, check=False)
    RESULTS["setup_seconds"] = round(time.time() - t, 1)
    assert "sk-ant-test-secret-123" not in p.stdout + p.stderr
    j = json.loads(p.stdout)
    steps = {s["step"]: s for s in j["steps"]}
    assert p.returncode == 0 and j["ok"], p.stdout + p.stderr
    assert steps["smoke"]["status"] == "done", steps
    assert steps["service"]["status"] == "skipped" and "on demand" in steps["service"]["detail"]
    assert steps["image"]["status"] == "skipped"  # the package's minimal image is there
    assert steps["keys"]["status"] == "skipped" and "1 key" in steps["keys"]["detail"]
    assert not os.path.exists(r.path / "root/.capsem/credentials")
    # again, storing the key: 0600, idempotent
    p = r.sh("capsem setup -n --store-keys --no-smoke --no-image --json",
             env={"ANTHROPIC_API_KEY": "sk-ant-test-secret-123"})
    cred = r.path / "root/.capsem/credentials"
    assert oct(cred.stat().st_mode & 0o777) == "0o600"
    assert "sk-ant-test-secret-123" in cred.read_text()
    assert "sk-ant-test-secret-123" not in p.stdout + p.stderr
    p = r.sh("capsem setup -n --no-smoke --no-image --json",
             env={"ANTHROPIC_API_KEY": "sk-ant-test-secret-123"})
    assert "already in" in p.stderr and json.loads(p.stdout)["ok"]
    assert json.loads((r.path / "root/.capsem/setup.json").read_text())["ok"]
    # the user service unit verifies on the installed root (systemd is a Recommends, in the
    # root for this; PID 1 is not systemd here, so the unit is not started)
    v = r.sh("systemd-analyze verify --user /usr/lib/systemd/user/capsemd.service",
             env={"XDG_RUNTIME_DIR": "/tmp"}, check=False)
    assert v.returncode == 0 and not v.stderr.strip(), v.stderr


@NEEDS_ROOT
def test_installed_update_package(installed, keys, tmp_path, deb):
    """A newer package from the channel, installed with apt-get inside the root."""
    r = installed
    newer = tmp_path / "newer"
    run(["/usr/bin/python3", os.path.join(ROOT, "scripts/mkdeb.py"), "--skip-build",
         "--version", field(deb, "Version") + "+t1", "--out", str(newer)])
    pkg = next(newer.iterdir())
    ch = Channel()
    try:
        shutil.copy(keys["pub"], r.path / "root/update-test.pub")
        url = publish(ch, keys, tmp_path, field(deb, "Version") + "+t1",
                      r.path / "usr/share/capsem/images/minimal", package=str(pkg))
        env = {"CAPSEM_UPDATE_KEY": "/root/update-test.pub"}
        p = r.sh(f"capsem update --channel {url} --no-images --json", env=env)
        assert json.loads(p.stdout)["package"]["action"] == "newer available"
        p = r.sh(f"capsem update --channel {url} --no-images --yes --json", env=env, check=False)
        assert p.returncode == 0, p.stdout + p.stderr
        assert json.loads(p.stdout)["package"]["action"] == "installed"
        v = r.sh("dpkg-query -W -f '${Version}' capsem").stdout
        assert v == field(deb, "Version") + "+t1"
        # a wrongly signed channel changes nothing
        url = publish(ch, keys, tmp_path, "99.0", r.path / "usr/share/capsem/images/minimal",
                      key="bad", package=str(pkg))
        p = r.sh(f"capsem update --channel {url} --yes --json", env=env, check=False)
        assert p.returncode == 1 and "signature" in json.loads(p.stdout)["error"]
    finally:
        ch.close()


@NEEDS_ROOT
def test_installed_uninstall_and_purge(installed):
    r = installed
    files = [l for l in r.sh("dpkg -L capsem").stdout.splitlines() if l.strip()]
    p = r.sh("capsem uninstall --purge --yes")
    assert "deleted /root/.capsem" in p.stdout and "apt remove capsem" in p.stdout
    assert not (r.path / "root/.capsem").exists()
    r.sh("apt-get purge -y capsem")
    left = [f for f in files if os.path.lexists(str(r.path) + f) and
            not os.path.isdir(str(r.path) + f)]
    assert not left, left
    for d in ("/etc/capsem", "/usr/share/capsem", "/usr/libexec/capsem",
              "/usr/share/doc/capsem"):
        assert not os.path.exists(str(r.path) + d), d
