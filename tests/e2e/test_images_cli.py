"""capsem image list | rm (capsemd's GET /images and DELETE /images/{name}: an image a running
VM uses is not deleted), the default image (CAPSEM_IMAGE pins it; else debian once installed,
else minimal), and `capsem doctor VM` (capsem-doctor inside the minimal image: what does not
apply there is skipped, with the reason)."""
import json
import os
import signal
import subprocess

import pytest

from conftest import CAPSEM, IMAGE, need_image, procs_mentioning, stop_daemon


@pytest.fixture
def env(tmp_path):
    """A private CAPSEM_HOME and images directory holding 'minimal' and 'spare' (hard links of
    the minimal image)."""
    need_image()
    home = tmp_path / "home"
    images = tmp_path / "images"
    home.mkdir()
    for name in ("minimal", "spare"):
        d = images / name
        d.mkdir(parents=True)
        for f in os.listdir(IMAGE):
            os.link(os.path.join(IMAGE, f), d / f)
    e = dict(os.environ, CAPSEM_HOME=str(home), CAPSEM_IMAGES_DIR=str(images))
    e.pop("CAPSEM_NO_DAEMON", None)
    yield e
    p = subprocess.run([CAPSEM, "list", "-a", "--json"], capture_output=True, env=e)
    if p.returncode == 0:
        ids = [v["id"] for v in json.loads(p.stdout)]
        if ids:
            subprocess.run([CAPSEM, "delete", *ids], capture_output=True, env=e)
    stop_daemon(home)
    left = procs_mentioning(str(home))
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, left


def cli(env, *args, timeout=300):
    return subprocess.run([CAPSEM, *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_list_and_rm(env):
    p = cli(env, "image", "list", "--json")
    assert p.returncode == 0, p.stderr
    imgs = {i["name"]: i for i in json.loads(p.stdout)}
    assert set(imgs) == {"minimal", "spare"}, imgs
    assert imgs["minimal"]["default"] and not imgs["spare"]["default"]
    assert imgs["spare"]["size"] > 0 and imgs["spare"]["in_use"] == []
    table = cli(env, "image", "list").stdout
    assert table.startswith("NAME") and "spare" in table
    p = cli(env, "image", "rm", "spare")
    assert p.returncode == 0 and p.stdout.strip() == "spare", p.stderr
    assert not os.path.exists(os.path.join(env["CAPSEM_IMAGES_DIR"], "spare"))
    p = cli(env, "image", "rm", "spare")
    assert p.returncode == 1 and "no image 'spare'" in p.stderr, p.stderr
    p = cli(env, "image", "rm", "../x")
    assert p.returncode == 1 and "not an image name" in p.stderr


def test_rm_refused_while_a_vm_uses_it(env):
    p = cli(env, "create", "-n", "user", "--image", "spare", "--memory", "256M")
    assert p.returncode == 0, p.stderr
    imgs = {i["name"]: i for i in json.loads(cli(env, "image", "list", "--json").stdout)}
    assert len(imgs["spare"]["in_use"]) == 1, imgs
    p = cli(env, "image", "rm", "spare")
    assert p.returncode == 1 and "used by running VMs: user" in p.stderr, p.stderr
    assert os.path.exists(os.path.join(env["CAPSEM_IMAGES_DIR"], "spare", "manifest.json"))
    assert cli(env, "stop", "user").returncode == 0
    p = cli(env, "image", "rm", "spare")
    assert p.returncode == 0, p.stderr
    assert cli(env, "delete", "user").returncode == 0


def test_default_image(env):
    # with CAPSEM_IMAGE unset and no debian image, a VM gets minimal; CAPSEM_IMAGE pins another
    e = dict(env)
    e.pop("CAPSEM_IMAGE", None)
    p = cli(e, "create", "-n", "d1", "--memory", "256M", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["image"] == "minimal"
    e["CAPSEM_IMAGE"] = "spare"
    p = cli(e, "create", "-n", "d2", "--memory", "256M", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["image"] == "spare"
    assert cli(e, "delete", "d1", "d2").returncode == 0


def test_doctor_in_the_minimal_image(env):
    p = cli(env, "create", "-n", "doc", "--memory", "256M")
    assert p.returncode == 0, p.stderr
    p = cli(env, "doctor", "doc", "--json")
    j = json.loads(p.stdout)
    st = {c["name"]: c for c in j["checks"]}
    assert p.returncode == 0 and j["ok"], j
    for name in ("setid", "modules", "devmem", "nics"):
        assert st[name]["status"] == "pass", st[name]
    assert st["rootfs-ro"]["status"] == "skip" and "minimal" in st["rootfs-ro"]["detail"]
    assert st["python3"]["status"] == "skip" and st["ai-clis"]["status"] == "skip"
    table = cli(env, "doctor", "doc")
    assert table.returncode == 0 and table.stdout.startswith("CHECK"), table
    assert "0 failed" in table.stdout
    # the host form is still there
    assert cli(env, "doctor", "--json").returncode in (0, 1)
