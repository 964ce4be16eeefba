"""capsemd's periodic update check (issue 15): off by default; `capsem update --auto daily`
turns it on; the daemon fetches the channel's manifest, verifies its signature with the
package's key and records what it found, which `capsem version` and GET /settings report. It
never installs anything. The channel is a local HTTP server (test_packaging.Channel) with a
manifest signed by a key made for the test; a wrongly signed one is reported as such and never
claims a newer version."""
import json
import os
import subprocess

import pytest

from conftest import CAPSEM, IMAGE, capsem_env, need_image, stop_daemon, wait_for
from test_packaging import Channel, keys, publish  # noqa: F401 (keys is a fixture)


def run(home, env, *args):
    return subprocess.run([CAPSEM, *args], capture_output=True, text=True, env=env,
                          timeout=120)


def settings(home):
    sock = os.path.join(home, "run", "capsemd.sock")
    r = subprocess.run(["curl", "-sS", "--unix-socket", sock, "http://capsem/settings"],
                       capture_output=True, text=True, timeout=30)
    return json.loads(r.stdout)


def last(home):
    try:
        return json.load(open(os.path.join(home, "update.json")))
    except (OSError, ValueError):
        return None


class Seen(dict):
    """The channel's files, remembering every path asked for."""
    def __init__(self, *a):
        super().__init__(*a)
        self.asked = []

    def get(self, k, d=None):
        self.asked.append(k)
        return super().get(k, d)


@pytest.fixture
def chan():
    ch = Channel()
    ch.files = Seen()
    yield ch
    ch.close()


def test_off_by_default_then_daily(tmp_path, keys, chan):  # noqa: F811
    need_image()
    home = str(tmp_path / "home")
    env = dict(capsem_env(home), CAPSEM_UPDATE_KEY=str(keys["pub"]),
               CAPSEM_UPDATE_CHECK_FIRST_MS="100")
    env.pop("CAPSEM_UPDATE_URL", None)
    url = publish(chan, keys, tmp_path, "99.0.0", IMAGE)
    try:
        # off by default: the daemon runs, nothing is fetched
        assert run(home, env, "list").returncode == 0
        assert settings(home)["update"]["check"] == "off"
        assert last(home) is None and chan.files.asked == []
        stop_daemon(home)

        r = run(home, env, "update", "--auto", "sometimes")
        assert r.returncode == 2 and "off, daily or weekly" in r.stderr, r
        r = run(home, env, "update", "--auto", "daily")
        assert r.returncode == 1 and "--channel URL" in r.stderr, r  # no channel configured
        r = run(home, env, "update", "--auto", "daily", "--channel", url)
        assert r.returncode == 0 and "daily" in r.stdout, r
        assert 'check = "daily"' in open(os.path.join(home, "settings.toml")).read()

        assert run(home, env, "list").returncode == 0  # starts capsemd
        got = wait_for(lambda: last(home), 30, "the daemon's update check")
        assert got["newer"] is True and got["latest"] == "99.0.0", got
        assert got["error"] is None and got["channel"] == url, got
        s = settings(home)["update"]
        assert s["check"] == "daily" and s["channel"] == url and s["last"]["newer"], s
        v = run(home, env, "version")
        assert "update: Capsem 99.0.0 is available" in v.stdout, v
        j = json.loads(run(home, env, "version", "--json").stdout)
        assert j["update"]["latest"] == "99.0.0", j
        # the manifest and its signature were read; no image file was downloaded
        assert set(chan.files.asked) == {"/channel.json", "/channel.json.sig"}, \
            chan.files.asked
        stop_daemon(home)

        # a manifest signed with another key: reported, never "newer"
        os.unlink(os.path.join(home, "update.json"))
        publish(chan, keys, tmp_path, "100.0.0", IMAGE, key="bad")
        assert run(home, env, "list").returncode == 0
        got = wait_for(lambda: last(home), 30, "the daemon's update check")
        assert got["newer"] is False and got["latest"] is None, got
        assert "signature" in got["error"], got
        assert "is available" not in run(home, env, "version").stdout

        r = run(home, env, "update", "--auto", "off")
        assert r.returncode == 0 and settings(home)["update"]["check"] == "off", r
    finally:
        stop_daemon(home)
