#!/usr/bin/python3
"""mkdeb.py - build dist/capsem_<version>_amd64.deb from this tree (`make deb`).

Steps (each incremental: the build directories and capsem-builder's cache are reused):
  1. host binaries: meson setup build-deb --prefix=/usr -Dpackaged=true, compiled with
     -ffile-prefix-map so no build path reaches a binary; only the installed targets are built
  2. the static guest binary: build-deb-guest (musl cross file of scripts/gen-musl-cross.sh);
     the containerd shim and its guest helper (Go, static: scripts/build-shim.sh --package,
     into build-deb/src/shim; reproducible with -trimpath, no build id, no VCS stamp)
  3. the 'minimal' image (kernel from Debian's linux-source-6.1 + initramfs) with
     capsem-builder into the package's /usr/share/capsem/images (kernel cached by content)
  4. the tree: meson install --strip; man pages and completion generated from --help
     (scripts/gen-man.py, gen-completion.py); the systemd user unit, /etc/capsem/corp.toml
     (a conffile), guest/config and the kernel fragment (what capsem-builder builds from),
     update.pub, copyright, changelog, lintian overrides (packaging/); the shim in /usr/bin
     (containerd finds containerd-shim-capsem-v2 on PATH), capsem-ctr-init in
     /usr/libexec/capsem, the shim's man page (section 8) and deploy/kubernetes/ as examples
  5. DEBIAN/control with Depends from dpkg-shlibdeps, conffiles, md5sums
  6. dpkg-deb --root-owner-group, with SOURCE_DATE_EPOCH = the commit's time, every mtime set
     to it and modes normalised, so two builds of one commit give the same bytes

The version is meson.build's project version: the one `capsem version` prints.
Options: --out DIR (default dist), --version V (repack under another version: tests of
`capsem update` only), --skip-build (reuse build-deb's staged tree).
"""
import argparse
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build-deb")
GBUILD = os.path.join(ROOT, "build-deb-guest")
STAGE = os.path.join(BUILD, "pkgroot")
JOBS = str(os.cpu_count() or 2)
PKG = os.path.join(ROOT, "packaging")


def run(cmd, **kw):
    print("+ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def out(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def project_version():
    m = re.search(r"project\('capsem',.*?version:\s*'([^']+)'", open(os.path.join(ROOT, "meson.build")).read(),
                  re.S)
    return m.group(1)


def source_date_epoch():
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    try:
        return int(out(["git", "-C", ROOT, "log", "-1", "--format=%ct"]).strip())
    except subprocess.CalledProcessError:
        return 0


def build_host(env):
    cflags = f"-ffile-prefix-map={ROOT}=."
    if not os.path.exists(os.path.join(BUILD, "build.ninja")):
        run(["meson", "setup", BUILD, "--prefix=/usr", "--libexecdir=libexec",
             "-Dpackaged=true", "-Dbuildtype=debugoptimized", f"-Dc_args={cflags}"], cwd=ROOT, env=env)
    targets = ["src/cli/capsem", "src/daemon/capsemd", "src/vm/capsem-vm",
               "src/builder/capsem-builder", "src/mcp/capsem-mcp", "src/webgw/capsem-gateway"]
    run(["ninja", "-C", BUILD, "-j" + JOBS, *targets], env=env)


def build_guest(env):
    cross = os.path.join(ROOT, "build-deb-guest-cross")
    if not os.path.exists(os.path.join(GBUILD, "build.ninja")):
        run(["scripts/gen-musl-cross.sh", cross], cwd=ROOT)
        ini = os.path.join(cross, "musl-cross.ini")
        text = open(ini).read().replace(
            "c_args = [", f"c_args = ['-ffile-prefix-map={ROOT}=.', ", 1)
        open(ini, "w").write(text)
        run(["meson", "setup", GBUILD, "--cross-file", ini, "-Drole=guest", "--prefix=/usr",
             "--libexecdir=libexec"], cwd=ROOT, env=env)
    run(["ninja", "-C", GBUILD, "-j" + JOBS], env=env)


def build_shim(env):
    run(["scripts/build-shim.sh", BUILD, "--package", "/usr/libexec/capsem"], cwd=ROOT, env=env)


def stage_tree(version, env):
    shutil.rmtree(STAGE, ignore_errors=True)
    run(["meson", "install", "-C", BUILD, "--no-rebuild", "--strip", "--destdir", STAGE,
         "--quiet"], env=env)
    # meson installs every host target with install: true; the guest agent built for the
    # host (tests only) is not one of them
    gdir = os.path.join(STAGE, "usr/libexec/capsem")
    os.makedirs(gdir, exist_ok=True)
    guest = os.path.join(gdir, "capsem-guest")
    run(["strip", "-o", guest, os.path.join(GBUILD, "src/guest/capsem-guest")])
    # the containerd shim (on containerd's PATH) and its guest helper (copied into each pod's
    # VM; the shim looks for it here: -X main.helperDir), linked stripped by build-shim.sh
    shim = os.path.join(BUILD, "src/shim")
    shutil.copy(os.path.join(shim, "containerd-shim-capsem-v2"), os.path.join(STAGE, "usr/bin"))
    shutil.copy(os.path.join(shim, "capsem-ctr-init"), gdir)
    # as dh_strip does: no .comment (compiler versions) or .note sections
    for b in ("usr/bin/capsem", "usr/bin/capsemd", "usr/bin/capsem-mcp", "usr/bin/capsem-builder",
              "usr/libexec/capsem/capsem-vm", "usr/libexec/capsem/capsem-guest",
              "usr/libexec/capsem/capsem-gateway"):
        run(["strip", "--remove-section=.comment", "--remove-section=.note",
             os.path.join(STAGE, b)])
    share = os.path.join(STAGE, "usr/share/capsem")
    # what capsem-builder builds from when installed (-Dpackaged=true)
    shutil.copytree(os.path.join(ROOT, "guest"), os.path.join(share, "guest"))
    # the minimal image, built with the package's guest binary
    images = os.path.join(share, "images")
    run([os.path.join(BUILD, "src/builder/capsem-builder"), "image", "--name", "minimal",
         "--guest-bin", guest, "--images-dir", images,
         "--fragment", os.path.join(ROOT, "guest/kernel/x86_64.config"), "--jobs", JOBS],
        env=env)
    # the verification cache (.verified: inode numbers and times of this build) is per machine:
    # never packaged (it would make two builds differ)
    for d, _, files in os.walk(images):
        if ".verified" in files:
            os.unlink(os.path.join(d, ".verified"))
    shutil.copy(os.path.join(PKG, "update.pub"), os.path.join(share, "update.pub"))
    # systemd user unit, corp policy example, completion, man pages
    unitdir = os.path.join(STAGE, "usr/lib/systemd/user")
    os.makedirs(unitdir)
    shutil.copy(os.path.join(PKG, "capsemd.service"), unitdir)
    os.makedirs(os.path.join(STAGE, "etc/capsem"))
    shutil.copy(os.path.join(PKG, "corp.toml"), os.path.join(STAGE, "etc/capsem/corp.toml"))
    bindir = os.path.join(BUILD, "helpbin")
    shutil.rmtree(bindir, ignore_errors=True)
    os.makedirs(bindir)
    for b in ("capsem", "capsemd", "capsem-mcp", "capsem-builder"):
        os.symlink(os.path.join(STAGE, "usr/bin", b), os.path.join(bindir, b))
    comp = os.path.join(BUILD, "completion")
    run([sys.executable, os.path.join(ROOT, "scripts/gen-completion.py"), comp, bindir], env=env)
    bc = os.path.join(STAGE, "usr/share/bash-completion/completions")
    zc = os.path.join(STAGE, "usr/share/zsh/vendor-completions")
    os.makedirs(bc)
    os.makedirs(zc)
    shutil.copy(os.path.join(comp, "capsem.bash"), os.path.join(bc, "capsem"))
    shutil.copy(os.path.join(comp, "_capsem"), os.path.join(zc, "_capsem"))
    mandir = os.path.join(BUILD, "man")
    shutil.rmtree(mandir, ignore_errors=True)
    run([sys.executable, os.path.join(ROOT, "scripts/gen-man.py"), mandir, bindir, version],
        env=env)
    man1 = os.path.join(STAGE, "usr/share/man/man1")
    os.makedirs(man1)
    for page in sorted(os.listdir(mandir)):
        gz(os.path.join(mandir, page), os.path.join(man1, page + ".gz"))
    # the shim's page is written by hand (containerd runs it with containerd's flags)
    man8 = os.path.join(STAGE, "usr/share/man/man8")
    os.makedirs(man8)
    date = time.strftime("%Y-%m-%d", time.gmtime(int(env["SOURCE_DATE_EPOCH"])))
    text = open(os.path.join(PKG, "containerd-shim-capsem-v2.8.in")).read()
    gz(None, os.path.join(man8, "containerd-shim-capsem-v2.8.gz"),
       text.replace("@VERSION@", version).replace("@DATE@", date).encode())
    doc = os.path.join(STAGE, "usr/share/doc/capsem")
    os.makedirs(doc)
    shutil.copy(os.path.join(PKG, "copyright"), doc)
    # a node's containerd and Kubernetes snippets (docs/SCALE-OUT.md), not installed anywhere live
    shutil.copytree(os.path.join(ROOT, "deploy/kubernetes"),
                    os.path.join(doc, "examples/kubernetes"))
    ov = os.path.join(STAGE, "usr/share/lintian/overrides")
    os.makedirs(ov)
    overrides = "".join(l for l in open(os.path.join(PKG, "lintian-overrides"))
                        if l.strip() and not l.startswith("#"))
    open(os.path.join(ov, "capsem"), "w").write(overrides)


def gz(src, dst, data=None):
    """gzip -9n: no name, no time (reproducible)."""
    data = open(src, "rb").read() if data is None else data
    with open(dst, "wb") as f:
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=9, mtime=0) as g:
            g.write(data)


def changelog(version, epoch):
    when = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(epoch))
    try:
        commit = out(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"]).strip()
    except subprocess.CalledProcessError:
        commit = "unknown"
    maint = re.search(r"^Maintainer: (.*)$", open(os.path.join(PKG, "control.in")).read(), re.M).group(1)
    text = (f"capsem ({version}) unstable; urgency=medium\n\n"
            f"  * Capsem {version}, built from commit {commit}.\n\n"
            f" -- {maint}  {when}\n")
    gz(None, os.path.join(STAGE, "usr/share/doc/capsem/changelog.gz"), text.encode())


def normalise(epoch):
    for dirpath, dirnames, filenames in os.walk(STAGE):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)
        for f in filenames:
            p = os.path.join(dirpath, f)
            if os.path.islink(p):
                continue
            mode = os.stat(p).st_mode
            os.chmod(p, 0o755 if mode & 0o111 else 0o644)
    for dirpath, dirnames, filenames in os.walk(STAGE, topdown=False):
        for n in filenames + dirnames:
            os.utime(os.path.join(dirpath, n), (epoch, epoch), follow_symlinks=False)
    os.utime(STAGE, (epoch, epoch))


def control(version, env):
    deb = os.path.join(STAGE, "DEBIAN")
    shutil.rmtree(deb, ignore_errors=True)
    os.makedirs(deb)
    # dpkg-shlibdeps wants a debian/control in its working directory
    work = os.path.join(BUILD, "shlibdeps")
    os.makedirs(os.path.join(work, "debian"), exist_ok=True)
    open(os.path.join(work, "debian/control"), "w").write(
        "Source: capsem\n\nPackage: capsem\nArchitecture: amd64\n")
    elves = [os.path.join(STAGE, p) for p in
             ("usr/bin/capsem", "usr/bin/capsemd", "usr/bin/capsem-mcp", "usr/bin/capsem-builder",
              "usr/libexec/capsem/capsem-vm", "usr/libexec/capsem/capsem-gateway")]
    shl = out(["dpkg-shlibdeps", "-O", "-e" + elves[0], *["-e" + e for e in elves[1:]]],
              cwd=work, env=env)
    shlibs = re.search(r"shlibs:Depends=(.*)", shl).group(1).strip()
    size = 0
    for dirpath, _, filenames in os.walk(STAGE):
        for f in filenames:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p) and "/DEBIAN" not in p:
                size += os.path.getsize(p)
    text = open(os.path.join(PKG, "control.in")).read()
    text = text.replace("@VERSION@", version).replace("@SHLIBS@", shlibs).replace(
        "@INSTALLED_SIZE@", str((size + 1023) // 1024))
    open(os.path.join(deb, "control"), "w").write(text)
    open(os.path.join(deb, "conffiles"), "w").write("/etc/capsem/corp.toml\n")
    # no maintainer scripts: nothing is enabled, created or registered system-wide (the user
    # service is enabled per user by capsem setup), so dpkg's own bookkeeping removes it all
    sums = []
    for dirpath, dirnames, filenames in os.walk(STAGE):
        dirnames[:] = sorted(d for d in dirnames if not (dirpath == STAGE and d in ("DEBIAN", "etc")))
        for f in sorted(filenames):
            p = os.path.join(dirpath, f)
            if os.path.islink(p):
                continue
            h = hashlib.md5(open(p, "rb").read()).hexdigest()
            sums.append(f"{h}  {os.path.relpath(p, STAGE)}\n")
    open(os.path.join(deb, "md5sums"), "w").write("".join(sorted(sums, key=lambda l: l[34:])))
    return shlibs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "dist"))
    ap.add_argument("--version")
    ap.add_argument("--skip-build", action="store_true")
    a = ap.parse_args()
    version = project_version()
    epoch = source_date_epoch()
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch), LC_ALL="C.UTF-8", TZ="UTC")
    t0 = time.time()
    if not a.skip_build:
        build_host(env)
        build_guest(env)
        build_shim(env)
        stage_tree(version, env)
    pkg_version = a.version or version
    changelog(pkg_version, epoch)
    control(pkg_version, env)
    normalise(epoch)
    os.makedirs(a.out, exist_ok=True)
    deb = os.path.join(a.out, f"capsem_{pkg_version}_amd64.deb")
    run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", STAGE, deb], env=env)
    print(f"mkdeb: {deb} ({os.path.getsize(deb) / 1048576:.1f} MiB) in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
