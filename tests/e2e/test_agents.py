"""The AI agents at work in the Debian image, end to end: Claude Code, Gemini CLI and Codex each
answer a real prompt, non-interactively (`claude -p`, `gemini -p`, `codex exec`) and on their
interactive first screen in `capsem shell` (driven in tmux), through the egress proxy, which
swaps the guest's placeholders for the keys of the host's credentials file. git and a
`gh`-style API call reach GitHub the same way (a GH_TOKEN placeholder and the image's git
credential helper); pushes are refused by the shipped policy until a user rule allows them.

The providers and GitHub are tests/e2e/upstream.py on 127.0.0.1 (the policy's
[[upstream.override]] entries send their names there): it enforces the keys as the real services
do and answers in their real response shapes, so a CLI that does not authenticate fails here as
it would against the real API. Nothing touches the network. The real keys must never be visible
in the guest: every readable file and every process environment is searched for them.

Prompt-to-answer and `--version` times in the guest are printed (pytest -s shows them).
"""
import base64
import json
import os
import re
import secrets
import shlex
import sqlite3
import subprocess
import urllib.error
import urllib.request

import pytest

import capsem_client as cc
from conftest import CAPSEM, IMAGES, VM, procs_mentioning, wait_for
from test_cli_daemon import clean_home, cli
from test_debian_image import DEBIAN, ensure_debian_image
from test_shell_tmux import Tmux
from upstream import KEYS, Upstream

PLACEHOLDERS = {"anthropic": "sk-ant-capsem-placeholder", "openai": "sk-capsem-placeholder",
                "gemini": "AIza-capsem-placeholder", "github": "ghp_capsem_placeholder"}
STAND_IN = ["api.anthropic.com", "api.openai.com", "generativelanguage.googleapis.com",
            "github.com", "api.github.com"]
OWNER, REPO, PUSHABLE = "capsem-test", "private", "pushable"
# the user rule that lets pushes to one repository through (the shipped policy blocks them all)
PUSH_RULE = f"""
[[rule]]
name = "push-{PUSHABLE}"
action = "allow"
hosts = ["github.com"]
methods = ["POST"]
paths = ["/{OWNER}/{PUSHABLE}.git/git-receive-pack"]
"""
# Codex fetches its plugin catalogue from chatgpt.com on start (the shipped policy allows the
# name for its ChatGPT sign-in): blocked here, so that nothing is resolved on the host; Codex goes
# on without it
NO_CHATGPT = """
[[rule]]
name = "no-chatgpt-here"
action = "block"
hosts = ["chatgpt.com"]
"""
PROVIDER_ENV = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY",
                "GH_TOKEN", "GITHUB_TOKEN")


def agents_policy(up):
    """The shipped default rules decide (providers allowed, GitHub read-only) but for one
    repository's pushes; the user file also sends the stand-in names to the local upstream and
    trusts its CA."""
    ov = "".join(f'[[upstream.override]]\nhost = "{h}"\nport = 443\n'
                 f'connect = "127.0.0.1:{up.https_port}"\n\n' for h in STAND_IN)
    return f'{PUSH_RULE}{NO_CHATGPT}\n[upstream]\nca_file = "{up.ca}"\n\n{ov}'


def write_home(home, up):
    (home / "user.toml").write_text(agents_policy(up))
    cred = home / "credentials"
    cred.write_text("".join(f'[{p}]\napi_key = "{k}"\n' for p, k in KEYS.items()))
    cred.chmod(0o600)


def host_env(home):
    env = dict(os.environ, CAPSEM_HOME=str(home))
    for k in PROVIDER_ENV:
        env.pop(k, None)  # the credentials file decides
    return env


def AgentVM(d, home):
    """capsem-vm started directly with the Debian image, a ledger and a private home."""
    return VM(d / "vm", "--cpus", "2", "--memory", "2G", image=DEBIAN, home=home,
              env=host_env(home), ledger=d / "session.db")


@pytest.fixture(scope="module")
def agents(tmp_path_factory):
    ensure_debian_image()
    d = tmp_path_factory.mktemp("agents")
    up = Upstream(str(d))
    up.git_repo(OWNER, REPO, {"README.md": "private repository\n"})
    up.git_repo(OWNER, PUSHABLE)
    home = d / "home"
    home.mkdir()
    write_home(home, up)
    vm = AgentVM(d, home)
    vm.up = up
    vm.dir = d
    yield vm
    assert vm.stop() == 0
    up.close()
    assert not procs_mentioning(str(d)), "QEMU or capsem-vm left behind"


def out(r):
    return r.stdout.decode(errors="replace")


def ok(r):
    assert r.status == 0, (r, out(r)[-3000:], r.stderr.decode(errors="replace")[-3000:])
    return out(r)


def ledger_now(vm, table, where="1=1", args=()):
    try:
        db = sqlite3.connect(f"file:{vm.ledger}?mode=ro", uri=True, timeout=5)
        db.row_factory = sqlite3.Row
        rows = [dict(r) for r in db.execute(f"SELECT * FROM {table} WHERE {where}", args)]
        db.close()
        return rows
    except sqlite3.Error:
        return []


def ledger_max_id(vm, table):
    rows = ledger_now(vm, table, "id = (SELECT MAX(id) FROM " + table + ")")
    return rows[0]["id"] if rows else 0


def auth_since(vm, n, provider):
    with vm.up.stats.lock:
        return [a for a in vm.up.stats.auth[n:] if a[0] == provider]


def requests_since(vm, n):
    with vm.up.stats.lock:
        return list(vm.up.stats.requests[n:])


def header(h, name):
    return next((v for k, v in h.items() if k.lower() == name), None)


# ---- the stand-in refuses what the real services refuse (host only, no VM) ----

def test_upstream_enforces_keys(tmp_path):
    up = Upstream(str(tmp_path))
    up.git_repo(OWNER, REPO)
    try:
        def call(host, path, headers=(), body=None, method=None):
            req = urllib.request.Request(f"http://127.0.0.1:{up.http_port}{path}", data=body,
                                         method=method)
            req.add_header("Host", host)
            for k, v in headers:
                req.add_header(k, v)
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return r.status, r.read(), dict(r.headers)
            except urllib.error.HTTPError as e:
                return e.code, e.read(), dict(e.headers)

        msg = json.dumps({"model": "m", "max_tokens": 5, "stream": False,
                          "messages": [{"role": "user", "content": "x"}]}).encode()
        cases = [  # (provider, host, path, method, body, how the key is sent)
            ("anthropic", "api.anthropic.com", "/v1/messages", "POST", msg,
             lambda k: [("x-api-key", k)]),
            ("anthropic", "api.anthropic.com", "/v1/messages", "POST", msg,
             lambda k: [("Authorization", "Bearer " + k)]),
            ("openai", "api.openai.com", "/v1/chat/completions", "POST", msg,
             lambda k: [("Authorization", "Bearer " + k)]),
            ("openai", "api.openai.com", "/v1/responses", "POST", msg,
             lambda k: [("Authorization", "Bearer " + k)]),
            ("gemini", "generativelanguage.googleapis.com",
             "/v1beta/models/gemini-2.5-flash:generateContent", "POST", b"{}",
             lambda k: [("x-goog-api-key", k)]),
            ("gemini", "generativelanguage.googleapis.com",
             "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key={key}", "POST",
             b"{}", lambda k: []),
            ("github", "api.github.com", "/user", "GET", None,
             lambda k: [("Authorization", "token " + k)]),
            ("github", "api.github.com", "/user", "GET", None,
             lambda k: [("Authorization", "Bearer " + k)]),
            ("github", "github.com", f"/{OWNER}/{REPO}.git/info/refs?service=git-upload-pack",
             "GET", None, lambda k: [("Authorization", "Basic " + base64.b64encode(
                 f"x-access-token:{k}".encode()).decode())]),
        ]
        for provider, host, path, method, body, how in cases:
            right = KEYS[provider]
            for key, want in ((None, "missing"), (PLACEHOLDERS[provider], "wrong"),
                              (right, "ok")):
                p = path.replace("{key}", key or "") if "{key}" in path else path
                if "{key}" in path and key is None:
                    p = path.replace("&key={key}", "")
                st, b, h = call(host, p, how(key) if key and "{key}" not in path else [],
                                body, method)
                case = (provider, host, path, want, st, b[:300])
                if want == "ok":
                    assert st == 200, case
                    continue
                if provider == "anthropic":
                    assert st == 401, case
                    doc = json.loads(b)
                    assert doc["type"] == "error" and \
                        doc["error"]["type"] == "authentication_error", case
                elif provider == "openai":
                    assert st == 401, case
                    doc = json.loads(b)["error"]
                    assert doc["type"] == "invalid_request_error", case
                    assert doc["code"] == (None if want == "missing" else "invalid_api_key"), case
                    if want == "wrong":  # the key itself is never echoed whole
                        assert key not in doc["message"], case
                elif provider == "gemini":
                    # as Google answers: 403 without a key, 400 API_KEY_INVALID with a wrong one
                    doc = json.loads(b)["error"]
                    assert (st, doc["status"]) == ((403, "PERMISSION_DENIED") if want == "missing"
                                                   else (400, "INVALID_ARGUMENT")), case
                elif host == "github.com":
                    assert st == 401 and 'Basic realm="GitHub"' in h.get("WWW-Authenticate",
                                                                         ""), case
                else:
                    assert st == 401, case
                    assert json.loads(b)["message"] == ("Requires authentication"
                                                        if want == "missing"
                                                        else "Bad credentials"), case
        # an AI endpoint's path needs its provider's key on any host
        st, b, _ = call("upstream.test", "/v1/messages", body=msg, method="POST")
        assert st == 401 and json.loads(b)["error"]["type"] == "authentication_error"
    finally:
        up.close()


# ---- the agents, non-interactively ----

def run_agent(vm, cli, command, cwd="/root"):
    """`CLI --version`, then the prompt, timed in the guest; (output, version_ms, answer_ms)."""
    r = vm.sh(f"cd {cwd} && a=$(date +%s%N); {cli} --version >/dev/null 2>&1; "
              f"b=$(date +%s%N); {command} </dev/null 2>&1; rc=$?; c=$(date +%s%N); "
              f"echo; echo capsem-times $(( (b-a)/1000000 )) $(( (c-b)/1000000 )) $rc",
              timeout=900)
    text = out(r)
    m = re.search(r"capsem-times (\d+) (\d+) (\d+)\s*$", text)
    assert m, text[-3000:]
    assert m.group(3) == "0", text[-3000:]
    return text, int(m.group(1)), int(m.group(2))


def check_call(vm, provider, nreq, nauth, since_id, path_prefix):
    """The real key reached the stand-in (never the placeholder), every request of the run was
    authenticated, and the model call is in the ledger with its tokens and timings."""
    auth = auth_since(vm, nauth, provider)
    assert auth and all(v == "ok" for _, _, _, v in auth), auth
    seen = [h for _, p, h in requests_since(vm, nreq) if p.startswith(path_prefix)]
    assert seen, requests_since(vm, nreq)
    for h in seen:
        vals = [header(h, "x-api-key"), header(h, "authorization"), header(h, "x-goog-api-key")]
        assert any(v and KEYS[provider] in v for v in vals), h
        assert not any(v and PLACEHOLDERS[provider] in v for v in vals), h
    rows = wait_for(lambda: [r for r in ledger_now(vm, "model_call", "provider = ? AND id > ?",
                                                   (provider, since_id))
                             if r["input_tokens"] == 321 and r["output_tokens"] == 12],
                    60, f"a {provider} model_call row with the stand-in's tokens")
    for row in rows:
        assert row["duration_ms"] is not None and row["duration_ms"] >= 0, row
        assert row["ttfb_ms"] is not None and row["ttfb_ms"] >= 0, row
    assert any(r["streamed"] == 1 for r in rows), rows
    return rows


def times(cli, version_ms, answer_ms):
    print(f"\n{cli} in the guest: --version {version_ms} ms, prompt to answer {answer_ms} ms")


def test_placeholders_in_the_guest(agents):
    env = ok(agents.sh("env"))
    for var, val in (("ANTHROPIC_API_KEY", PLACEHOLDERS["anthropic"]),
                     ("OPENAI_API_KEY", PLACEHOLDERS["openai"]),
                     ("GEMINI_API_KEY", PLACEHOLDERS["gemini"]),
                     ("GH_TOKEN", PLACEHOLDERS["github"])):
        assert f"{var}={val}\n" in env, (var, env)
    # login shells (capsem shell) skip Claude Code's folder-trust dialog everywhere
    assert ok(agents.sh("bash -lc 'echo $CLAUDE_CODE_SANDBOXED'")).strip() == "1"
    # Codex reads its key from auth.json (the placeholder), not from the environment
    doc = json.loads(ok(agents.sh("cat /root/.codex/auth.json")))
    assert doc == {"auth_mode": "apikey", "OPENAI_API_KEY": PLACEHOLDERS["openai"]}
    assert ok(agents.sh("stat -c %a /root/.codex/auth.json")).strip() == "600"


@pytest.mark.parametrize("cli,provider,path", [("claude", "anthropic", "/v1/messages"),
                                               ("gemini", "gemini", "/v1beta/models/")])
def test_print_mode(agents, cli, provider, path):
    word = secrets.token_hex(6)
    nreq, nauth = len(agents.up.stats.requests), len(agents.up.stats.auth)
    since = ledger_max_id(agents, "model_call")
    text, v_ms, a_ms = run_agent(agents, cli, f"{cli} -p 'capsem-probe-{word}: hello'")
    assert f"capsem-answer-{word}" in text, text[-3000:]
    check_call(agents, provider, nreq, nauth, since, path)
    times(cli, v_ms, a_ms)


def test_codex_exec(agents):
    word = secrets.token_hex(6)
    nreq, nauth = len(agents.up.stats.requests), len(agents.up.stats.auth)
    since = ledger_max_id(agents, "model_call")
    # outside a git repository `codex exec` wants --skip-git-repo-check (Codex's own rule)
    text, v_ms, a_ms = run_agent(agents, "codex", "codex exec --skip-git-repo-check "
                                 f"'capsem-probe-{word}: hello'")
    assert f"capsem-answer-{word}" in text, text[-3000:]
    check_call(agents, "openai", nreq, nauth, since, "/v1/responses")
    # Codex's built-in provider speaks the Responses API over a WebSocket (first try, no
    # fallback to HTTPS): the proxy read the call from the frames (check_call found its row)
    ups = [h for _, p, h in requests_since(agents, nreq) if header(h, "upgrade")]
    assert ups and header(ups[0], "upgrade").lower() == "websocket", requests_since(agents, nreq)
    assert "Falling back from WebSockets" not in text, text[-3000:]
    times("codex", v_ms, a_ms)
    # in a git repository, as in a project, no flag is needed
    word = secrets.token_hex(6)
    ok(agents.sh("mkdir -p /root/workspace && git -C /root/workspace init -q"))
    text, _, _ = run_agent(agents, "codex", f"codex exec 'capsem-probe-{word}: hello'",
                           cwd="/root/workspace")
    assert f"capsem-answer-{word}" in text, text[-3000:]


def test_codex_websocket_key_swapped_on_upgrade(agents):
    # Codex's own WebSocket transport (the image's Codex speaks HTTPS, see providers.toml) works
    # too: the upgrade request is an HTTP request like any other and carries the swapped key; the
    # proxy keeps permessage-deflate off the socket and reads the model call from its frames
    script = r"""
import base64, json, os, socket, ssl
ctx = ssl.create_default_context()
s = ctx.wrap_socket(socket.create_connection(("api.openai.com", 443), timeout=300),
                    server_hostname="api.openai.com")
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET /v1/responses HTTP/1.1\r\nHost: api.openai.com\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key +
           "\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits" +
           "\r\nAuthorization: Bearer " + os.environ["OPENAI_API_KEY"] + "\r\n\r\n").encode())
f = s.makefile("rb")
print(f.readline().decode().strip())
while f.readline() not in (b"\r\n", b""):
    pass
msg = json.dumps({"type": "response.create", "model": "gpt-x",
                  "input": "capsem-probe-overws"}).encode()
s.sendall(bytes([0x81, 0x80 | 126]) + len(msg).to_bytes(2, "big") + b"\0\0\0\0" + msg)
while True:
    h = f.read(2)
    n = h[1] & 0x7f
    if n == 126:
        n = int.from_bytes(f.read(2), "big")
    ev = json.loads(f.read(n))
    if ev["type"] == "response.completed":
        print(ev["response"]["output"][0]["content"][0]["text"])
        break
"""
    nreq = len(agents.up.stats.requests)
    since = ledger_max_id(agents, "model_call")
    r = cc.run(agents.vsock, ["/usr/bin/python3", "-c", script], io_timeout=600)
    lines = ok(r).split("\n")
    assert lines[0].startswith("HTTP/1.1 101 "), lines
    assert lines[1] == "capsem-answer-overws", lines
    up = [h for _, p, h in requests_since(agents, nreq) if header(h, "upgrade")]
    assert up and header(up[0], "authorization") == "Bearer " + KEYS["openai"], up
    assert header(up[0], "sec-websocket-extensions") is None, up
    rows = wait_for(lambda: [r for r in ledger_now(agents, "model_call", "id > ?", (since,))
                             if r["model"] == "gpt-x"], 60, "the WebSocket model call")
    row = rows[0]
    assert (row["provider"], row["input_tokens"], row["output_tokens"], row["streamed"],
            row["stop_reason"]) == ("openai", 321, 12, 1, "completed"), row
    assert row["duration_ms"] >= 0 and row["ttfb_ms"] >= 0, row


# ---- GitHub through the same credential model ----

def test_git_clone_and_fetch_with_the_placeholder(agents):
    nauth = len(agents.up.stats.auth)
    url = f"https://github.com/{OWNER}/{REPO}.git"
    ok(agents.sh(f"rm -rf /root/clone && git clone -q {url} /root/clone && "
                 "cat /root/clone/README.md"))
    assert ok(agents.sh("cat /root/clone/README.md")) == "private repository\n"
    ok(agents.sh("git -C /root/clone fetch -q origin && git -C /root/clone status -sb"))
    auth = auth_since(agents, nauth, "github")
    # git asks without credentials first; the 401 challenge makes it ask its helper
    assert ("github", "GET", f"/{OWNER}/{REPO}.git/info/refs", "ok") in auth, auth
    assert ("github", "POST", f"/{OWNER}/{REPO}.git/git-upload-pack", "ok") in auth, auth
    assert all(v in ("ok", "missing") for *_, v in auth), auth
    basic = [header(h, "authorization") for _, p, h in agents.up.stats.requests
             if p.startswith(f"/{OWNER}/") and header(h, "authorization")]
    assert basic and all(b == "Basic " + base64.b64encode(
        f"x-access-token:{KEYS['github']}".encode()).decode() for b in basic), basic
    # without GH_TOKEN the helper says nothing: the private repository stays closed
    r = agents.sh(f"cd /tmp && rm -rf c2 && env -u GH_TOKEN GIT_TERMINAL_PROMPT=0 "
                  f"git clone -q {url} c2")
    assert r.status != 0 and b"terminal prompts disabled" in r.stderr, r


def test_gh_style_api_call(agents):
    r = agents.sh("curl -sS --max-time 120 -H \"Authorization: token $GH_TOKEN\" "
                  "https://api.github.com/user")
    assert json.loads(ok(r))["login"] == "capsem-test"
    r = agents.sh("curl -sS --max-time 120 -w '\\n%{http_code}' https://api.github.com/user")
    body, code = ok(r).rsplit("\n", 1)
    assert code == "401" and json.loads(body)["message"] == "Requires authentication"


def test_push_blocked_by_the_shipped_policy_allowed_by_a_user_rule(agents):
    commit = "git -c user.email=a@b -c user.name=a commit -q --allow-empty -m from-the-vm"
    nreq = len(agents.up.stats.requests)
    ok(agents.sh(f"cd /root/clone && {commit}"))
    r = agents.sh("cd /root/clone && git push -q origin HEAD:main")
    assert r.status != 0 and b"403" in r.stderr, r
    assert not [p for m, p, _ in requests_since(agents, nreq)
                if m == "POST" and p.endswith("/git-receive-pack")]
    rows = wait_for(lambda: ledger_now(agents, "net", "path = ? AND method = 'POST'",
                                       (f"/{OWNER}/{REPO}.git/git-receive-pack",)),
                    60, "the blocked push's row")
    assert rows[-1]["decision"] == "block" and rows[-1]["status"] == 403, rows
    assert rows[-1]["rule"] == "default", rows
    # the repository a user rule names takes the push
    ok(agents.sh(f"cd /root && rm -rf p && git clone -q https://github.com/{OWNER}/{PUSHABLE}.git"
                 f" p && cd p && {commit} && git push -q origin HEAD:main"))
    bare = os.path.join(agents.up.git_root, OWNER, PUSHABLE + ".git")
    log = subprocess.run(["git", "-C", bare, "log", "--format=%s", "-1", "main"],
                         capture_output=True, text=True, check=True).stdout
    assert log.strip() == "from-the-vm"
    rows = ledger_now(agents, "net", "path = ? AND method = 'POST'",
                      (f"/{OWNER}/{PUSHABLE}.git/git-receive-pack",))
    assert rows[-1]["decision"] == "allow" and rows[-1]["rule"] == f"push-{PUSHABLE}", rows


def test_ssh_remotes_are_not_supported(agents):
    r = agents.sh("GIT_SSH_COMMAND='ssh -o BatchMode=yes -o StrictHostKeyChecking=no "
                  f"-o ConnectTimeout=60' git ls-remote git@github.com:{OWNER}/{REPO}.git")
    assert r.status != 0, r


# ---- what never happened ----

# Runs in the guest: every readable regular file under / (not /proc, /sys, /dev, nor the
# read-only image under the overlay, which / shows) and every /proc/*/environ, searched for the
# needles given as hex of the reversed bytes (so that this script's own command line never
# holds a key); prints the paths that hold one.
SCAN = r"""
import os, stat, sys
needles = [bytes.fromhex(h)[::-1] for h in sys.argv[1:]]
width = max(map(len, needles))
hits, files, size = [], 0, 0
def scan(p):
    global files, size
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return
        files += 1
        tail = b""
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                return
            size += len(b)
            chunk = tail + b
            if any(n in chunk for n in needles):
                hits.append(p)
                return
            tail = chunk[-width:]
    except OSError:
        return
    finally:
        os.close(fd)
skip = {"/proc", "/sys", "/dev", "/mnt/capsem-rootfs"}
for root, dirs, names in os.walk("/"):
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in skip]
    for n in names:
        scan(os.path.join(root, n))
for pid in os.listdir("/proc"):
    if pid.isdigit():
        scan(f"/proc/{pid}/environ")
print(files, size)
print("\n".join(hits))
"""


def test_real_keys_never_in_the_guest(agents):
    needles = list(KEYS.values())
    needles.append(base64.b64encode(f"x-access-token:{KEYS['github']}".encode()).decode())
    args = [n.encode()[::-1].hex() for n in needles]
    r = cc.run(agents.vsock, ["/usr/bin/python3", "-c", SCAN, *args], io_timeout=3600)
    lines = ok(r).split("\n")
    files, size = map(int, lines[0].split())
    assert files > 10000 and size > 500 << 20, lines[0]  # the whole tree was read
    assert [l for l in lines[1:] if l] == [], lines
    print(f"\nkey scan: {files} files, {size >> 20} MiB, no real key")


def test_nothing_left_for_the_internet(agents):
    # every connection the agents, git and curl opened went to the stand-in's names; first one
    # more request whose row must come after all of theirs, so that every row is on disk
    mark = f"/capsem-flush-{os.getpid()}"
    agents.sh(f"curl -sS --max-time 60 -o /dev/null https://api.github.com{mark}; true")
    wait_for(lambda: ledger_now(agents, "net", "path = ?", (mark,)), 60, "the last request's row")
    rows = ledger_now(agents, "net", "decision = 'allow'")
    assert rows and all(r["host"] in STAND_IN for r in rows), \
        [(r["host"], r["comm"], r["method"], r["path"], r["status"], r["error"]) for r in rows
         if r["host"] not in STAND_IN]


# ---- the interactive first screens, in capsem shell ----

# (cli, a line of its ready first screen, what it must not show, how to leave it)
SCREENS = [
    ("claude", r"bypass permissions on",
     r"trust this folder|Do you want to use this API key|Make auto mode|Select login|"
     r"Choose the text style|Press Enter to continue", "/exit"),
    ("gemini", r"Type your message",
     r"Do you trust|How would you like to authenticate|Login with Google|home directory",
     "/quit"),
    ("codex", r"Ask Codex to do anything",
     r"Trust this folder|Sign in with ChatGPT|Provide your own API key|Welcome to Codex|"
     r"Press Enter to continue", "/quit"),
]


def submit(t, text, until, timeout):
    """Type text into a CLI and press Enter once the CLI shows it (Enter right behind typed keys
    is a newline to Gemini CLI's paste guard), again if that only broke the line; wait for
    `until` on the screen."""
    t.run("send-keys", "-t", "t", "-l", text)
    t.wait(re.escape(text), timeout=120)
    t.keys("Enter")
    try:
        return t.wait(until, timeout=60)
    except AssertionError:
        t.keys("Enter")
        return t.wait(until, timeout=timeout)


@pytest.fixture(scope="module")
def shell_home(tmp_path_factory, agents):
    h = tmp_path_factory.mktemp("agents-shell") / "home"
    h.mkdir()
    write_home(h, agents.up)
    yield h
    left = clean_home(h)
    assert not left, f"processes left behind: {left}"


def test_interactive_first_screens(agents, shell_home):
    t = Tmux(f"capsem-agents-{os.getpid()}")
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in
                   (("CAPSEM_HOME", str(shell_home)), ("CAPSEM_IMAGES_DIR", IMAGES),
                    ("CAPSEM_IMAGE", "debian")))
    unset = " ".join(f"-u {k}" for k in PROVIDER_ENV)
    cmd = f"env {unset} {env} {shlex.quote(CAPSEM)} shell --memory 2G; echo rc=$?; sleep 900"
    t.run("-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", "120", "-y", "40", cmd)
    try:
        t.wait(r"[#$] ?$", timeout=600)
        t.keys("mkdir -p /root/workspace && git -C /root/workspace init -q; echo made-$((2*3))",
               "Enter")
        t.wait(r"^made-6\s*$", timeout=60)
        n = 0
        for cli_name, ready, never, leave in SCREENS:
            for cwd in ("/root/workspace", "/root"):
                n += 1
                t.keys(f"clear; cd {cwd} && {cli_name}", "Enter")
                screen = t.wait(ready, timeout=300)
                assert not re.search(never, screen, re.I), (cli_name, cwd, screen)
                print(f"\n{cli_name} in {cwd}, first screen:\n" +
                      "\n".join(l for l in screen.splitlines() if l.strip() and "\u28ff" not in l))
                # the first screen takes a prompt at once (no dialog in the way) and answers it
                # with the swapped key
                word = secrets.token_hex(4)
                nauth = len(agents.up.stats.auth)
                screen = submit(t, f"capsem-probe-{word} hello", f"capsem-answer-{word}", 300)
                assert not re.search(never, screen, re.I), (cli_name, cwd, screen)
                provider = {"claude": "anthropic", "gemini": "gemini", "codex": "openai"}[cli_name]
                auth = auth_since(agents, nauth, provider)
                assert auth and all(v == "ok" for *_, v in auth), auth
                submit(t, leave, r"^root@\S+:\S+# ?$", 120)  # bash's prompt again
                t.keys(f"clear; echo left-{n}-$((1+1))", "Enter")
                t.wait(rf"^left-{n}-2\s*$", timeout=120)
        t.keys("exit 0", "Enter")
        t.wait(r"^rc=0\s*$", timeout=120)
    finally:
        t.run("kill-server", check=False)

