"""The web dashboard in a real browser: ui/tests/ui.test.mjs (playwright-core driving Debian's
chromium) against a real capsemd, its gateway (capsem ui) and a real VM. Screenshots of every
view and the axe-core reports land in build/ui-artifacts/; a model call made in a Debian VM
through the proxy to the local provider stand-in (tests/e2e/upstream.py) is looked up in the
Model calls tab with its tokens and cost; the pager walks that VM's ledger, given PAGE_ROWS
more requests, by its keyset cursors; the terminal's keystroke-to-echo latency in
build/ui-artifacts/latency-browser.json."""
import json
import os
import re
import shutil
import sqlite3
import subprocess
import time

import pytest

from conftest import CAPSEM, IMAGES, ROOT, need_image, procs_mentioning, wait_for
from test_debian_image import ensure_debian_image
from test_webgw import cli, stop_daemon
from upstream import KEYS, Upstream

ARTIFACTS = os.path.join(ROOT, "build", "ui-artifacts")
PAGE_ROWS = 130  # blocked requests added to the model VM's ledger: three pages of 50 to walk


def model_call_vm(h, up):
    """A Debian VM (curl) makes one Anthropic call through the proxy to the local stand-in,
    which answers with token usage: the browser must find it in the Model calls tab."""
    p = cli(h, "create", "-n", "uimodel", "--image", "debian", "--memory", "1G")
    assert p.returncode == 0, p.stderr
    body = ('{"model":"claude-sonnet-4-5","max_tokens":20,'
            '"messages":[{"role":"user","content":"capsem-probe-ui"}]}')
    p = cli(h, "exec", "uimodel", "--", "sh", "-c",
            "curl -sS --max-time 120 -H \"x-api-key: $ANTHROPIC_API_KEY\" "
            "-H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' "
            f"-d '{body}' https://api.anthropic.com/v1/messages")
    assert p.returncode == 0 and b"capsem-answer-ui" in p.stdout, (p.stdout, p.stderr)
    assert any(path == "/v1/messages" and hd.get("x-api-key") == KEYS["anthropic"]
               for _, path, hd in up.stats.requests), "the stand-in did not get the real key"


def seed_pages(h, vm, n):
    """n blocked requests written into the VM's session ledger (SQLite's locking serialises
    this writer with the VM's own), so that the HTTP tab has pages to walk."""
    info = json.loads(cli(h, "info", vm, "--json").stdout)
    db = sqlite3.connect(os.path.join(h, "sessions", info["session"] + ".db"), timeout=30)
    now = int(time.time() * 1000)
    db.executemany("INSERT INTO net (ts, scheme, method, host, path, decision, rule) "
                   "VALUES (?, 'https', 'GET', 'paging.example', ?, 'block', 'ui-paging')",
                   [(now + i, f"/p{i}") for i in range(n)])
    db.commit()
    db.close()


def test_dashboard_in_chromium(tmp_path):
    need_image()
    ensure_debian_image()
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(chromium):
        pytest.fail("chromium is missing: scripts/install-deps.sh installs it")
    if not os.path.exists(os.path.join(ROOT, "ui", "node_modules", "playwright-core")):
        pytest.fail("ui/node_modules is missing: `make build` runs npm ci in ui/")
    h = tmp_path / "home"
    h.mkdir()
    # the provider's API is the local stand-in (its own CA), reached through the policy's
    # override; the host holds the real key, the guest only the placeholder
    up = Upstream(str(tmp_path))
    (h / "user.toml").write_text(f"""
[[rule]]
name = "ui-anthropic"
action = "allow"
hosts = ["api.anthropic.com"]
ports = [443]

[upstream]
ca_file = "{up.ca}"

[[upstream.override]]
host = "api.anthropic.com"
port = 443
connect = "127.0.0.1:{up.https_port}"
""")
    cred = h / "credentials"
    cred.write_text(f'[anthropic]\napi_key = "{KEYS["anthropic"]}"\n')
    cred.chmod(0o600)
    try:
        model_call_vm(h, up)
        seed_pages(h, "uimodel", PAGE_ROWS)
        p = cli(h, "ui")
        assert p.returncode == 0, p.stderr
        url = p.stdout.decode().strip()
        assert re.match(r"http://127\.0\.0\.1:\d+/#token=\w{64}$", url)
        os.makedirs(ARTIFACTS, exist_ok=True)
        r = subprocess.run(["node", "tests/ui.test.mjs", url], cwd=os.path.join(ROOT, "ui"),
                           env=dict(os.environ, ARTIFACTS=ARTIFACTS, CHROMIUM=chromium,
                                    UI_MODEL_VM="uimodel", UI_PAGE_ROWS=str(PAGE_ROWS)),
                           capture_output=True, timeout=900)
        out = r.stdout.decode() + r.stderr.decode()
        print(out)
        assert r.returncode == 0, out[-4000:]
        lat = json.load(open(os.path.join(ARTIFACTS, "latency-browser.json")))
        assert lat["p50_ms"] > 0
        for name in ("01-dashboard-empty", "04-terminal", "06-activity-http", "09-policy"):
            assert os.path.getsize(os.path.join(ARTIFACTS, name + ".png")) > 1000
    finally:
        p = cli(h, "list", "-a", "--json")
        if p.returncode == 0:
            ids = [v["id"] for v in json.loads(p.stdout)]
            if ids:
                cli(h, "delete", *ids)
        stop_daemon(h)
        up.close()
    left = procs_mentioning(str(h))
    assert not left, f"processes left behind: {left}"
