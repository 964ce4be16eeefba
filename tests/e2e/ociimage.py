"""A small OCI image archive built locally (no registry here): the host's static busybox with its
applets, curl with the shared libraries it needs (so TLS from a container verifies against the
container's own trust store: Debian's bundle, without the Capsem CA), /etc/passwd with root and
user 1000. `ctr image import` reads the archive. Used by tests/e2e/test_containerd.py and
bench/bench_containerd.py."""
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile

APPLETS = ["sh", "uname", "cat", "echo", "id", "sleep", "wget", "ls", "env", "pwd", "true",
           "false", "head", "grep", "printf", "test", "kill", "hostname", "ps", "mount", "nslookup",
           "touch", "rm", "mkdir", "tr", "wc", "seq", "date", "stat", "readlink"]


def _libs(binary):
    out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        for p in parts:
            if p.startswith("/"):
                libs.append(p)
    return libs


def build_rootfs(root):
    """Fill directory root with the image's files."""
    os.makedirs(root, exist_ok=True)
    for d in ("bin", "usr/bin", "etc/ssl/certs", "tmp", "root", "proc", "dev", "sys", "home/u"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    shutil.copy2("/bin/busybox", os.path.join(root, "bin/busybox"))
    for a in APPLETS:
        os.symlink("busybox", os.path.join(root, "bin", a))
    curl = shutil.which("curl")
    shutil.copy2(curl, os.path.join(root, "usr/bin/curl"))
    for lib in _libs(curl):
        dst = os.path.join(root, lib.lstrip("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(os.path.realpath(lib), dst)
    shutil.copy2("/etc/ssl/certs/ca-certificates.crt", os.path.join(root, "etc/ssl/certs"))
    shutil.copy2("/etc/ssl/certs/ca-certificates.crt", os.path.join(root, "etc/ssl/debian-roots.pem"))
    with open(os.path.join(root, "etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nu:x:1000:1000:u:/home/u:/bin/sh\n")
    with open(os.path.join(root, "etc/group"), "w") as f:
        f.write("root:x:0:\nu:x:1000:\nextra:x:2000:u\n")
    os.chown(os.path.join(root, "home/u"), 1000, 1000)


def _blob(blobs, data):
    h = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, h), "wb") as f:
        f.write(data)
    return "sha256:" + h


def build_archive(out, name="docker.io/capsem/test:latest", workdir=None):
    """Write an OCI image archive (tar) of build_rootfs() to out; returns the image name."""
    work = workdir or out + ".d"
    shutil.rmtree(work, ignore_errors=True)
    root = os.path.join(work, "rootfs")
    build_rootfs(root)
    layout = os.path.join(work, "oci")
    blobs = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobs)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        for e in sorted(os.listdir(root)):
            t.add(os.path.join(root, e), arcname=e)
    layer = raw.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    gz = gzip.compress(layer, mtime=0)
    layer_d = _blob(blobs, gz)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    config_d = _blob(blobs, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_d, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_d, "size": len(gz)}]}).encode()
    manifest_d = _blob(blobs, manifest)
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_d,
        "size": len(manifest), "platform": {"architecture": "amd64", "os": "linux"},
        "annotations": {"io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}}]}
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with tarfile.open(out, "w") as t:
        for e in ("oci-layout", "index.json", "blobs"):
            t.add(os.path.join(layout, e), arcname=e)
    shutil.rmtree(work, ignore_errors=True)
    return name
