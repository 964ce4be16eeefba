"""The web dashboard in a real browser: ui/tests/ui.test.mjs (playwright-core driving Debian's
chromium) against a real capsemd, its gateway (capsem ui) and a real VM. Screenshots of every
view and the axe-core reports land in build/ui-artifacts/; the terminal's keystroke-to-echo
latency in build/ui-artifacts/latency-browser.json."""
import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import CAPSEM, IMAGES, ROOT, need_image, procs_mentioning, wait_for
from test_webgw import cli, stop_daemon

ARTIFACTS = os.path.join(ROOT, "build", "ui-artifacts")


def test_dashboard_in_chromium(tmp_path):
    need_image()
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(chromium):
        pytest.fail("chromium is missing: scripts/install-deps.sh installs it")
    if not os.path.exists(os.path.join(ROOT, "ui", "node_modules", "playwright-core")):
        pytest.fail("ui/node_modules is missing: `make build` runs npm ci in ui/")
    h = tmp_path / "home"
    h.mkdir()
    try:
        p = cli(h, "ui")
        assert p.returncode == 0, p.stderr
        url = p.stdout.decode().strip()
        assert re.match(r"http://127\.0\.0\.1:\d+/#token=\w{64}$", url)
        os.makedirs(ARTIFACTS, exist_ok=True)
        r = subprocess.run(["node", "tests/ui.test.mjs", url], cwd=os.path.join(ROOT, "ui"),
                           env=dict(os.environ, ARTIFACTS=ARTIFACTS, CHROMIUM=chromium),
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
    left = procs_mentioning(str(h))
    assert not left, f"processes left behind: {left}"
