"""Fork images (issue 13, item 1): `capsem fork VM IMAGE` turns a configured VM into an image;
VMs created from it start with its system changes, its /root and its own workspace, each with a
copy of its own; a fork of a fork depends only on the base; a base stays while forks use it; a
tampered fork is refused at boot.

The module works on its own images directory holding a hard-linked copy of the Debian image
(`cp -al`), so that removing or breaking images here never touches the installed ones.
"""
import json
import os
import shutil
import subprocess

import pytest

from conftest import CAPSEM, IMAGES
from test_cli_daemon import clean_home

DEBIAN = os.path.join(IMAGES, "debian")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    if not os.path.exists(os.path.join(DEBIAN, "manifest.json")):
        pytest.fail(f"the debian image is missing at {DEBIAN}: run `make image-debian`")
    d = tmp_path_factory.mktemp("fork")
    images = d / "images"
    images.mkdir()
    subprocess.run(["cp", "-al", DEBIAN, str(images / "debian")], check=True)
    home = d / "home"
    home.mkdir()
    yield d, home, images
    assert not clean_home(home, under=d), "QEMU, capsem-vm or virtiofsd left behind"


def cli(env, *args, timeout=600, check=None):
    _, home, images = env
    e = dict(os.environ, CAPSEM_HOME=str(home), CAPSEM_IMAGES_DIR=str(images))
    e.pop("CAPSEM_NO_DAEMON", None)
    p = subprocess.run([CAPSEM, *args], capture_output=True, env=e, timeout=timeout)
    if check is not None:
        assert p.returncode == check, (args, p.returncode, p.stdout, p.stderr)
    return p


def sh(env, vm, script):
    p = cli(env, "exec", vm, "--", "sh", "-c", script, check=0)
    return p.stdout.decode()


def test_fork_and_boot_from_it(env):
    d, home, images = env
    cli(env, "create", "-n", "tmpl", "--image", "debian", "--memory", "384M", check=0)
    # a system change (a package-like file under /usr/local and a config in /etc), a login in
    # /root and a file in the VM's own workspace
    sh(env, "tmpl", "mkdir -p /usr/local/lib/tool && echo v1 > /usr/local/lib/tool/VERSION && "
                    "echo 'setting=1' > /etc/tool.conf && echo token > /root/.login && "
                    "echo notes > /root/workspace/notes.txt")
    # a running VM: synced and forked, and it keeps running
    p = cli(env, "fork", "tmpl", "tool-img", "--description", "tool v1 installed", "--json",
            check=0)
    made = json.loads(p.stdout)
    assert made["image"] == "tool-img" and made["base"] == "debian" and made["workspace"], made
    assert sh(env, "tmpl", "cat /etc/tool.conf") == "setting=1\n"
    print(f"\nfork of a running VM: {made['elapsed_ms']:.0f} ms, "
          f"{made['disk_used'] / 1048576:.1f} MiB of disk data")
    man = json.loads((images / "tool-img" / "manifest.json").read_text())
    assert man["base"]["name"] == "debian" and "kernel" not in man, man
    assert man["description"] == "tool v1 installed" and man["parent_vm"].startswith("tmpl (")
    lst = json.loads(cli(env, "image", "list", "--json", check=0).stdout)
    fork = [i for i in lst if i["name"] == "tool-img"][0]
    assert fork["base"] == "debian" and fork["description"] == "tool v1 installed", fork
    cli(env, "stop", "tmpl", check=0)

    # two VMs from the fork: both have everything, then diverge
    for vm in ("a", "b"):
        cli(env, "create", "-n", vm, "--image", "tool-img", "--memory", "384M", check=0)
        out = sh(env, vm, "cat /usr/local/lib/tool/VERSION /etc/tool.conf /root/.login "
                          "/root/workspace/notes.txt")
        assert out == "v1\nsetting=1\ntoken\nnotes\n", (vm, out)
    sh(env, "a", "echo v2 > /usr/local/lib/tool/VERSION; echo a-only > /root/workspace/a.txt")
    assert sh(env, "b", "cat /usr/local/lib/tool/VERSION; ls /root/workspace") == \
        "v1\nnotes.txt\n"
    # an ephemeral run from the fork: the changes too, gone with it
    p = cli(env, "run", "--image", "tool-img", "--memory", "384M", "--", "cat",
            "/usr/local/lib/tool/VERSION", check=0)
    assert p.stdout == b"v1\n", p

    # a fork of a fork (stopped this time) depends only on the base
    cli(env, "stop", "a", check=0)
    p = cli(env, "fork", "a", "tool-v2", "--json", check=0)
    assert json.loads(p.stdout)["base"] == "debian"
    man2 = json.loads((images / "tool-v2" / "manifest.json").read_text())
    assert man2["base"]["name"] == "debian", man2
    cli(env, "create", "-n", "c", "--image", "tool-v2", "--memory", "384M", check=0)
    assert sh(env, "c", "cat /usr/local/lib/tool/VERSION; cat /root/workspace/a.txt") == \
        "v2\na-only\n"
    for vm in ("b", "c"):
        cli(env, "stop", vm, check=0)

    # the base stays while forks use it; removing a fork leaves the base alone
    p = cli(env, "image", "rm", "debian")
    assert p.returncode != 0 and b"tool-img" in p.stderr and b"tool-v2" in p.stderr, p
    assert (images / "debian" / "manifest.json").exists()

    # a fork's disk tampered with: refused at boot, by name
    disk = images / "tool-v2" / "disk.img"
    with open(disk, "r+b") as f:
        f.seek(1 << 20)
        f.write(b"tampered")
    p = cli(env, "create", "-n", "bad", "--image", "tool-v2", "--memory", "384M")
    assert p.returncode != 0 and b"disk.img" in p.stderr, p
    cli(env, "delete", "bad")

    # names: refused before anything is copied
    p = cli(env, "fork", "b", "Bad Name")
    assert p.returncode != 0 and b"not an image name" in p.stderr, p
    p = cli(env, "fork", "b", "tool-img")
    assert p.returncode != 0 and b"exists" in p.stderr, p

    cli(env, "delete", "tmpl", "a", "b", "c", check=0)

    # an ephemeral VM: its changes live in guest memory; the guest streams them out
    p = cli(env, "create", "--image", "debian", "--memory", "384M", check=0)
    eph = p.stdout.decode().strip()
    sh(env, eph, "echo from-memory > /etc/eph.conf; rm /etc/motd; echo hi > /root/.eph; "
                 "echo ws > /root/workspace/eph.txt")
    p = cli(env, "fork", eph, "eph-img", "--json", check=0)
    assert json.loads(p.stdout)["base"] == "debian"
    cli(env, "delete", eph, check=0)
    p = cli(env, "run", "--image", "eph-img", "--memory", "384M", "--", "sh", "-c",
            "cat /etc/eph.conf /root/.eph /root/workspace/eph.txt; "
            "[ -e /etc/motd ] && echo motd-back || echo motd-gone", check=0)
    # the deleted file stays deleted: the overlay's whiteout came along
    assert p.stdout == b"from-memory\nhi\nws\nmotd-gone\n", p
    cli(env, "image", "rm", "eph-img", check=0)
    cli(env, "image", "rm", "tool-v2", "tool-img", check=0)
    assert (images / "debian" / "manifest.json").exists()
    assert not (images / "tool-img").exists()
    shutil.rmtree(images / "debian")
