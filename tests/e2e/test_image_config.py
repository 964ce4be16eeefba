"""capsem-builder's image config commands, without building anything: validate (every error
code against its fixture in tests/data/builder-config/, with FILE:LINE), plan (stable output:
compared with a golden file), new (scaffold + rename, refuses to overwrite) and the shipped
guest/config."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import BUILD, ROOT

BUILDER = os.path.join(BUILD, "src", "builder", "capsem-builder")
FIXTURES = os.path.join(ROOT, "tests", "data", "builder-config")
GUEST_CONFIG = os.path.join(ROOT, "guest", "config")


def builder(*args, **kw):
    return subprocess.run([BUILDER, *args], capture_output=True, text=True, timeout=60, **kw)


def fixtures():
    return sorted(d for d in os.listdir(FIXTURES) if d.startswith("E"))


def test_every_code_has_a_fixture():
    codes = [d[:4] for d in fixtures()]
    assert codes == [f"E{i:03d}" for i in range(1, 23)], codes


@pytest.mark.parametrize("name", fixtures())
def test_validate_fixture(name):
    d = os.path.join(FIXTURES, name)
    code, loc = open(os.path.join(d, "expect")).read().split()[:2]
    r = builder("validate", d)
    assert r.returncode == 1, r
    want = f"{d}/{loc}: {code}: " if loc != "-" else f"{d}: {code}: "
    assert any(l.startswith(want) for l in r.stdout.splitlines()), (want, r.stdout)
    j = json.loads(builder("validate", d, "--json").stdout)
    assert j["ok"] is False and j["errors"], j
    assert {e["code"] for e in j["errors"]} == {code}, j
    if loc != "-":
        f, line = loc.split(":")
        assert any(e["file"] == f and e["line"] == int(line) for e in j["errors"]), j


def test_validate_ok():
    for d in (os.path.join(FIXTURES, "valid"), GUEST_CONFIG):
        r = builder("validate", d)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.strip().endswith(")"), r.stdout
        assert json.loads(builder("validate", d, "--json").stdout)["ok"] is True


@pytest.mark.parametrize("venv,ok", [("/root/.venv", True), ("/root/envs/py", True),
                                     ("/opt/venv", False), ("/root/../etc", False),
                                     ("relative", False)])
def test_venv_must_live_under_root(tmp_path, venv, ok):
    # the seed copies the venv into each VM's /root: anywhere else it would not be there
    d = tmp_path / "cfg"
    shutil.copytree(os.path.join(FIXTURES, "valid"), d)
    env = (d / "environment.toml").read_text().replace("[environment]\n",
                                                       f'[environment]\nvenv = "{venv}"\n', 1)
    (d / "environment.toml").write_text(env)
    j = json.loads(builder("validate", str(d), "--json").stdout)
    if ok:
        assert j["ok"] is True, j
    else:
        assert [(e["code"], e["line"]) for e in j["errors"]] == [("E017", 2)], j
        assert "environment.venv" in j["errors"][0]["message"], j


def test_plan_is_stable(tmp_path):
    d = os.path.join(FIXTURES, "valid")
    cache = tmp_path / "empty-cache"
    a = builder("plan", d, "--cache", str(cache))
    b = builder("plan", d, "--cache", str(cache))
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout
    assert a.stdout == open(os.path.join(FIXTURES, "plan-valid.txt")).read()
    j = json.loads(builder("plan", d, "--cache", str(cache), "--json").stdout)
    assert [l["name"] for l in j["layers"]] == ["base", "npm", "image"]
    assert all(len(l["key"]) == 64 and l["cached"] is False for l in j["layers"])
    assert j["npm"] == ["@example/tool@latest"] and j["vm"]["cpus"] == 4


def test_plan_keys_follow_the_config(tmp_path):
    # a change to the banner moves only the image layer's key; a new CLI version the npm one
    src = os.path.join(FIXTURES, "valid")
    cfg = tmp_path / "cfg"
    shutil.copytree(src, cfg)
    base = json.loads(builder("plan", str(cfg), "--cache", str(tmp_path), "--json").stdout)
    env = cfg / "environment.toml"
    env.write_text(env.read_text().replace('banner = "hello"', 'banner = "hi"'))
    banner = json.loads(builder("plan", str(cfg), "--cache", str(tmp_path), "--json").stdout)
    keys = lambda p: [l["key"] for l in p["layers"]]
    assert keys(banner)[:2] == keys(base)[:2] and keys(banner)[2] != keys(base)[2]
    img = cfg / "image.toml"
    img.write_text(img.read_text().replace('cli = "tool"', 'cli = "tool"\nversion = "1.2.3"'))
    ver = json.loads(builder("plan", str(cfg), "--cache", str(tmp_path), "--json").stdout)
    assert keys(ver)[0] == keys(base)[0] and keys(ver)[1] != keys(base)[1]


def test_guest_config_plan():
    j = json.loads(builder("plan", GUEST_CONFIG, "--json").stdout)
    assert j["name"] == "debian"
    assert {"@anthropic-ai/claude-code@latest", "@google/gemini-cli@latest",
            "@openai/codex@latest"} <= set(j["npm"])
    assert {"python3", "git", "curl", "ca-certificates"} <= set(j["apt"])


def test_new(tmp_path):
    dst = tmp_path / "myimage"
    r = builder("new", str(dst), "--from", GUEST_CONFIG)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(dst)) == sorted(f for f in os.listdir(GUEST_CONFIG)
                                             if f.endswith(".toml"))
    j = json.loads(builder("validate", str(dst), "--json").stdout)
    assert j["ok"], j
    assert json.loads(builder("plan", str(dst), "--json").stdout)["name"] == "myimage"
    # refuses to overwrite, leaves the directory as it was
    (dst / "note").write_text("mine")
    r = builder("new", str(dst), "--from", GUEST_CONFIG)
    assert r.returncode == 1 and "already exists" in r.stderr, r
    assert (dst / "note").read_text() == "mine"
    r = builder("new", str(tmp_path / "x"), "--name", "../bad")
    assert r.returncode == 2
