"""`capsem policy check | show | defaults`: the egress policy explained locally (no daemon, no VM).

Every test passes --corp with a file in its own temporary directory, so a real
/etc/capsem/corp.toml on the machine never changes the outcome; the user file is
$CAPSEM_HOME/user.toml in a private CAPSEM_HOME.
"""
import json
import os
import subprocess

import pytest

from conftest import CAPSEM, ROOT


@pytest.fixture
def phome(tmp_path):
    h = tmp_path / "capsem-home"
    h.mkdir()
    return h


def policy(home, *args, corp=None):
    corp = corp or os.path.join(str(home), "no-corp.toml")
    env = dict(os.environ, CAPSEM_HOME=str(home))
    return subprocess.run([CAPSEM, "policy", *args, "--corp", str(corp)], capture_output=True,
                          env=env, timeout=30, text=True)


def check_json(home, *args, corp=None):
    p = policy(home, "check", *args, "--json", corp=corp)
    assert p.returncode in (0, 1), p.stderr
    d = json.loads(p.stdout)
    assert p.returncode == (0 if d["action"] == "allow" else 1)
    return d


def test_defaults_allow_providers_block_the_rest(phome):
    p = policy(phome, "check", "https://api.anthropic.com/v1/messages", "--method", "POST")
    assert p.returncode == 0, p.stderr
    assert "ALLOWED by rule 'anthropic' (defaults layer, <defaults>:" in p.stdout
    assert "request:    POST api.anthropic.com port 443 path /v1/messages" in p.stdout

    d = check_json(phome, "https://api.openai.com/v1/chat/completions?stream=true", "-X", "POST")
    assert (d["action"], d["rule"], d["layer"]) == ("allow", "openai", "default")
    assert d["request"] == {"level": "request", "host": "api.openai.com", "port": 443,
                            "method": "POST", "path": "/v1/chat/completions?stream=true",
                            "normalized_path": "/v1/chat/completions?stream=true"}
    assert d["trace"][-1]["result"] == "decides"

    p = policy(phome, "check", "https://example.com/")
    assert p.returncode == 1, p.stderr
    assert "no rule names this host" in p.stdout
    assert "BLOCKED by the default action (set by the defaults layer)" in p.stdout
    d = check_json(phome, "example.com")
    assert (d["action"], d["rule"], d["request"]["level"]) == ("block", "default", "dns")

    # registries are read-only; git fetches pass, pushes do not
    assert check_json(phome, "https://registry.npmjs.org/left-pad")["rule"] == "npm"
    assert check_json(phome, "https://registry.npmjs.org/left-pad", "-X", "PUT")["action"] == "block"
    assert check_json(phome, "https://github.com/o/r.git/git-upload-pack",
                      "-X", "POST")["rule"] == "github-git-fetch"
    d = check_json(phome, "https://github.com/o/r.git/git-receive-pack", "-X", "POST")
    assert d["action"] == "block"
    assert [t["result"] for t in d["trace"]] == ["no-method", "no-path"]
    assert check_json(phome, "http://deb.debian.org/debian/dists/bookworm/InRelease")["rule"] == "debian"


def test_connection_and_dns_levels(phome):
    d = check_json(phome, "github.com:443")
    assert (d["action"], d["rule"], d["provisional"]) == ("allow", "github-read", True)
    assert d["request"] == {"level": "connection", "host": "github.com", "port": 443,
                            "method": None, "path": None, "normalized_path": None}
    d = check_json(phome, "api.anthropic.com:443")
    assert (d["action"], d["provisional"]) == ("allow", False)
    assert check_json(phome, "api.anthropic.com:22")["action"] == "block"
    assert check_json(phome, "[::1]:443")["action"] == "block"
    p = policy(phome, "check", "github.com:443")
    assert p.returncode == 0
    assert "a connection that is not HTTP is refused" in p.stdout


@pytest.mark.parametrize("args", [
    ["check"],
    ["check", "a", "b"],
    ["check", "ftp://example.com/"],
    ["check", "https://user@example.com/"],
    ["check", "https://example.com:0/"],
    ["check", "https://example.com:99999/"],
    ["check", "example.com:http"],
    ["check", "::1:443"],
    ["check", "bad..name"],
    ["check", "example.com", "--method", "GET"],
    ["check", "https://example.com/", "--method", "G T"],
    ["check", "https://example.com/", "--bogus"],
    ["show", "https://example.com/"],
    ["frobnicate"],
    ["defaults", "x"],
])
def test_bad_input_exits_2(phome, args):
    p = policy(phome, *args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert p.stderr.strip(), "a bad input says why"


def test_user_file(phome):
    (phome / "user.toml").write_text(
        '[[rule]]\nname = "example"\naction = "allow"\nhosts = ["example.com", "*.example.com"]\n'
        'ports = [443]\n\n'
        '[[rule]]\nname = "no-pushes"\naction = "block"\nhosts = ["github.com"]\n'
        'methods = ["POST"]\npriority = 10\n')
    d = check_json(phome, "https://www.example.com/x")
    assert (d["action"], d["rule"], d["layer"]) == ("allow", "example", "user")
    assert d["source"] == f"{phome}/user.toml:1"
    # user rules come before the defaults
    d = check_json(phome, "https://github.com/o/r.git/git-upload-pack", "-X", "POST")
    assert (d["action"], d["rule"]) == ("block", "no-pushes")
    # a BLOCK rule with a method condition does not block the connection
    d = check_json(phome, "github.com:443")
    assert d["action"] == "allow"
    assert d["trace"][0] == {"rule": "no-pushes", "layer": "user", "action": "block",
                             "priority": 10, "result": "skipped",
                             "why": "skipped: a block rule whose method/path/port cannot be "
                                    "checked yet"}

    s = json.loads(policy(phome, "show", "--json").stdout)
    assert [r["name"] for r in s["rules"][:3]] == ["no-pushes", "example", "anthropic"]
    assert s["rules"][0]["methods"] == ["POST"] and s["rules"][1]["ports"] == [443]
    assert s["files"]["user"] == f"{phome}/user.toml"
    assert (s["files"]["user_state"], s["files"]["corp_state"]) == ("present", "absent")
    assert s["default"] == {"action": "block", "layer": "default"}


def test_corp_locks_settings(phome, tmp_path):
    corp = tmp_path / "corp.toml"
    corp.write_text('[policy]\ndefault = "allow"\n\n[[rule]]\nname = "no-openai"\n'
                    'action = "block"\nhosts = ["api.openai.com"]\n')
    (phome / "user.toml").write_text('# mine\n[policy]\ndefault = "block"\n'
                                     '[[rule]]\nname = "openai-mine"\naction = "allow"\n'
                                     'hosts = ["api.openai.com"]\npriority = 1000\n')
    d = check_json(phome, "https://unknown.example/", corp=corp)
    assert (d["action"], d["rule"], d["layer"]) == ("allow", "default", "corp")
    want = f"{phome}/user.toml:3: policy.default is locked by {corp}; the user value is ignored"
    assert d["warnings"] == [want]
    # corp rules beat user rules whatever the priority
    d = check_json(phome, "https://api.openai.com/v1/models", corp=corp)
    assert (d["action"], d["rule"], d["layer"]) == ("block", "no-openai", "corp")
    p = policy(phome, "check", "https://api.openai.com/v1/models", corp=corp)
    assert p.returncode == 1 and want in p.stderr
    p = policy(phome, "show", corp=corp)
    assert p.returncode == 0
    assert "default action: allow (set by the corp layer)" in p.stdout
    assert "warnings:\n  " + want in p.stdout


def test_invalid_files_exit_2_with_file_and_line(phome, tmp_path):
    (phome / "user.toml").write_text('[[rule]]\nname = "x"\naction = "allow"\n'
                                     'hosts = [\n  "ok.example",\n  "bad*.example",\n]\n')
    for sub in (["show"], ["check", "example.com"]):
        p = policy(phome, *sub)
        assert p.returncode == 2
        assert f"{phome}/user.toml:6: rule 'x': hosts: 'bad*.example' is not a host pattern" \
            in p.stderr
    (phome / "user.toml").write_text('[policy]\ndefault = "deny"\n')
    p = policy(phome, "show")
    assert p.returncode == 2
    assert f"{phome}/user.toml:2: policy.default: must be \"allow\" or \"block\"" in p.stderr
    (phome / "user.toml").unlink()
    p = policy(phome, "show", corp=tmp_path)  # a directory
    assert p.returncode == 2 and "not a regular file" in p.stderr


def test_defaults_and_help(phome):
    p = policy(phome, "defaults")
    assert p.returncode == 0
    with open(os.path.join(ROOT, "src", "egress", "default-policy.toml")) as f:
        assert p.stdout == f.read()
    p = subprocess.run([CAPSEM, "policy", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "capsem policy check URL" in p.stdout
    p = subprocess.run([CAPSEM, "--help"], capture_output=True, text=True)
    assert "policy check URL | show | defaults" in p.stdout


def test_tool_rules_decided_and_shown(phome):
    (phome / "user.toml").write_text(
        '[[tool_rule]]\nname = "no-write"\naction = "block"\nserver = "capsem"\n'
        'tool = "write_*"\n')
    r = policy(phome, "tool", "capsem__write_file")
    assert r.returncode == 1 and "BLOCKED by tool rule 'no-write'" in r.stdout, r.stdout
    r = policy(phome, "tool", "capsem__fetch", "--json")
    assert r.returncode == 0
    doc = json.loads(r.stdout)
    assert doc["action"] == "allow" and doc["rule"] == "default" and doc["tool"] == "fetch"
    r = policy(phome, "tool", "nounderscores")
    assert r.returncode == 2 and "SERVER__TOOL" in r.stderr
    r = policy(phome, "show", "--json")
    doc = json.loads(r.stdout)
    assert doc["tool_rules"][0]["name"] == "no-write" and doc["tool_rules"][0]["tool"] == "write_*"
    assert doc["tool_default"]["action"] == "allow"


def test_encoded_path_and_case_decided_like_the_proxy(phome):
    # issue 17 item 1: `check` answers what the proxy does (it normalises the same way)
    (phome / "user.toml").write_text(
        '[[rule]]\nname = "v1"\naction = "allow"\nhosts = ["h.test"]\npaths = ["/v1/"]\n\n'
        '[[rule]]\nname = "no-admin"\naction = "block"\nhosts = ["h.test"]\n'
        'paths = ["/v1/admin"]\npriority = 1\n')
    d = check_json(phome, "https://h.test/v1/%61dmin")
    assert (d["action"], d["rule"]) == ("block", "no-admin")
    assert d["request"]["path"] == "/v1/%61dmin"
    assert d["request"]["normalized_path"] == "/v1/admin"
    p = policy(phome, "check", "https://h.test/v1/%61dmin")
    assert p.returncode == 1
    assert "normalised: /v1/admin (what is decided and sent upstream)" in p.stdout
    # BLOCK paths ignore case, ALLOW paths do not
    assert check_json(phome, "https://h.test/v1/ADMIN")["rule"] == "no-admin"
    assert check_json(phome, "https://h.test/V1/x")["rule"] == "default"
    d = check_json(phome, "https://h.test/v1/caf%c3%a9?q=%61")
    assert (d["action"], d["request"]["normalized_path"]) == ("allow", "/v1/caf%C3%A9?q=%61")
    # a rule path that can never match is a load error
    (phome / "user.toml").write_text(
        '[[rule]]\nname = "x"\naction = "block"\nhosts = ["h.test"]\npaths = ["/a%2fb"]\n')
    p = policy(phome, "check", "https://h.test/")
    assert p.returncode == 2 and "user.toml:5: rule 'x': paths: '/a%2fb': an encoded" in p.stderr


def test_wildcard_max_labels(phome, tmp_path):
    # issue 17 item 6: "*." stands for one label unless a layer says otherwise
    (phome / "user.toml").write_text(
        '[[rule]]\nname = "ex"\naction = "allow"\nhosts = ["*.example.com"]\n')
    assert check_json(phome, "a.example.com")["rule"] == "ex"
    d = check_json(phome, "a.b.example.com")
    assert (d["action"], d["rule"]) == ("block", "default")
    assert d["trace"][0]["result"] == "too-deep"
    p = policy(phome, "check", "a.b.example.com")
    assert "wildcard_max_labels" in p.stdout
    s = json.loads(policy(phome, "show", "--json").stdout)
    assert s["wildcard_max_labels"] == {"value": 1, "layer": "default"}
    # the shipped defaults name hosts exactly
    assert not [h for r in s["rules"] if r["layer"] == "default" for h in r["hosts"] if "*" in h]
    assert check_json(phome, "c2VjcmV0.anthropic.com")["action"] == "block"
    assert "wildcard_max_labels: 1 (" in policy(phome, "show").stdout
    # a user may raise it; a corp file locks it
    (phome / "user.toml").write_text(
        '[policy]\nwildcard_max_labels = 0\n\n'
        '[[rule]]\nname = "ex"\naction = "allow"\nhosts = ["*.example.com"]\n')
    assert check_json(phome, "a.b.example.com")["rule"] == "ex"
    corp = tmp_path / "corp.toml"
    corp.write_text('[policy]\nwildcard_max_labels = 1\n')
    d = check_json(phome, "a.b.example.com", corp=corp)
    assert d["rule"] == "default"
    assert "policy.wildcard_max_labels is locked" in d["warnings"][0]
