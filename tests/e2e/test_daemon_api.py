"""End-to-end tests of capsemd (docs/API.md) driven over its Unix socket with Python's
http.client, against real capsem-vm supervisors and QEMU microVMs.

Each test module gets a private CAPSEM_HOME; at teardown every VM is stopped or killed and no
process mentioning the home may remain.
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import threading

import pytest

import capsem_client as cc

from conftest import BUILD, IMAGES, need_image, procs_mentioning, wait_for

CAPSEMD = os.path.join(BUILD, "src", "daemon", "capsemd")


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=180):
        super().__init__("capsemd", timeout=timeout)
        self.path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


class Daemon:
    def __init__(self, home):
        self.home = home
        self.sock = os.path.join(home, "run", "capsemd.sock")
        self.proc = None

    def env(self):
        return dict(os.environ, CAPSEM_HOME=str(self.home), CAPSEM_IMAGES_DIR=IMAGES)

    def start(self):
        self.proc = subprocess.Popen([CAPSEMD, "--foreground", "--home", str(self.home)],
                                     env=self.env(), stderr=open(os.path.join(self.home, "d.log"), "ab"))
        wait_for(lambda: self._up(), 20, "capsemd to listen")

    def _up(self):
        if self.proc.poll() is not None:
            raise RuntimeError("capsemd exited: " + open(os.path.join(self.home, "d.log")).read())
        try:
            return self.request("GET", "/health")[0] == 200
        except OSError:
            return False

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)

    def request(self, method, path, body=None, raw=False, headers=None, timeout=180):
        c = UnixHTTPConnection(self.sock, timeout)
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        c.close()
        if raw:
            return r.status, data
        return r.status, json.loads(data) if data else None

    def exec_stream(self, ref, req):
        """POST /vms/{ref}/exec with Upgrade; returns the raw socket after the 101."""
        body = json.dumps(req).encode()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(120)
        s.connect(self.sock)
        s.sendall(b"POST /vms/%s/exec HTTP/1.1\r\nHost: capsemd\r\nConnection: Upgrade\r\n"
                  b"Upgrade: capsem-exec/1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % (ref.encode(), len(body)) + body)
        head = b""
        while b"\r\n\r\n" not in head:
            c = s.recv(1)
            if not c:
                raise ConnectionError(f"closed before the response: {head!r}")
            head += c
        status = int(head.split(b" ")[1])
        if status != 101:
            rest = head.split(b"\r\n\r\n", 1)[1]
            s.settimeout(5)
            try:
                while True:
                    d = s.recv(65536)
                    if not d:
                        break
                    rest += d
            except socket.timeout:
                pass
            s.close()
            raise RuntimeError(f"exec answered {status}: {rest!r}")
        return s

    def run(self, ref, argv, stdin=b"", shell=False, env=None):
        s = self.exec_stream(ref, {"argv": argv, "shell": shell, "env": env or []})
        try:
            r = cc.session(s, stdin=stdin)
            # the daemon closes the connection after EXIT
            s.setblocking(True)
            s.settimeout(10)
            assert s.recv(1) == b""
        finally:
            s.close()
        return {"stdout": r.stdout, "stderr": r.stderr, "status": r.status,
                "error": r.error.encode() if r.error is not None else None}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    need_image()
    h = tmp_path_factory.mktemp("d") / "home"
    h.mkdir()
    yield h
    for pid in procs_mentioning(str(h)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    left = procs_mentioning(str(h))
    assert not left, f"processes left behind: {left}"


@pytest.fixture(scope="module")
def daemon(home):
    d = Daemon(home)
    d.start()
    yield d
    # stop every VM through the API, then the daemon
    if d.proc.poll() is None:
        st, vms = d.request("GET", "/vms")
        for vm in vms:
            if vm["state"] in ("running", "creating"):
                d.request("POST", f"/vms/{vm['id']}/stop")
        d.request("POST", "/purge")
        for vm in d.request("GET", "/vms")[1]:
            d.request("DELETE", f"/vms/{vm['id']}")
    d.stop()
    wait_for(lambda: not procs_mentioning(str(home)), 30, "every process to exit")


def test_version_and_health(daemon):
    st, v = daemon.request("GET", "/version")
    assert st == 200 and v["api"] == 1 and v["protocol"] == 1
    st, h = daemon.request("GET", "/health")
    assert st == 200 and h["ok"] is True


def test_socket_and_dirs_private(daemon, home):
    assert os.stat(os.path.join(home, "run")).st_mode & 0o777 == 0o700
    assert os.stat(daemon.sock).st_mode & 0o777 == 0o600
    assert int(open(os.path.join(home, "run", "capsemd.pid")).read()) == daemon.proc.pid


def test_second_daemon_refused(daemon, home):
    # exit status 3 (CAPSEMD_EXIT_RUNNING): the API client tells "already running" from failure
    p = subprocess.run([CAPSEMD, "--foreground", "--home", str(home)], env=daemon.env(),
                       capture_output=True, timeout=20)
    assert p.returncode == 3
    assert b"another capsemd already serves" in p.stderr
    p = subprocess.run([CAPSEMD, "--home", str(home)], env=daemon.env(), capture_output=True,
                       timeout=20)
    assert p.returncode == 3
    assert daemon.request("GET", "/health")[0] == 200


def test_failed_first_boot_leaves_nothing(daemon):
    st, e = daemon.request("POST", "/vms", {"name": "ghost", "image": "no-such-image"})
    assert st >= 400 and "no-such-image" in e["error"], e
    assert daemon.request("GET", "/vms/ghost")[0] == 404
    # and the name is free again
    st, e = daemon.request("POST", "/vms", {"name": "ghost", "image": "no-such-image"})
    assert st >= 400 and e["code"] != "name_taken", e


def test_bad_input(daemon):
    assert daemon.request("GET", "/vms/nope")[0] == 404
    st, e = daemon.request("GET", "/vms/nope")
    assert e["code"] == "not_found"
    assert daemon.request("GET", "/nothing")[0] == 404
    assert daemon.request("PUT", "/vms")[0] == 405
    for body in ({"memory": "1M"}, {"memory": "65G"}, {"disk": "1M"}, {"cpus": 0},
                 {"cpus": 65}, {"name": "Bad Name"}, {"name": "-x"}, {"env": ["NOEQ"]},
                 {"env": ["1A=b"]}, {"mounts": [{"host": "relative", "guest": "/mnt"}]},
                 {"mounts": [{"host": "/nonexistent-dir-xyz", "guest": "/mnt"}]},
                 {"mounts": [{"host": "/tmp", "guest": "/mnt/../etc"}]},
                 {"mounts": [{"host": "/tmp", "guest": "mnt"}]}, {"unknown": 1}, [1, 2]):
        st, e = daemon.request("POST", "/vms", body)
        assert st == 400, body
        assert e["code"] == "bad_request" and e["error"], body
    st, e = daemon.request("POST", "/vms", b"{not json")
    assert st == 400 and e["code"] == "bad_request"
    st, e = daemon.request("POST", "/vms", b"[" * 100 + b"]" * 100)
    assert st == 400 and "deeper" in e["error"]
    # oversized body
    st, e = daemon.request("POST", "/vms", b"x" * (1024 * 1024 + 1))
    assert st == 413 and e["code"] == "too_large"
    # malformed HTTP and oversized headers
    for raw, want in ((b"GARBAGE\r\n\r\n", 400), (b"GET / HTTP/2.0\r\n\r\n", 400),
                      (b"GET /version HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
                      (b"GET /version HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
                      (b"GET /version HTTP/1.1\r\n" + b"X-A: b\r\n" * 129 + b"\r\n", 431),
                          (b"GET /version HTTP/1.1\r\nX-A: " + b"b" * 70000 + b"\r\n\r\n", 431),
                      (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 431)):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(daemon.sock)
        s.sendall(raw)
        resp = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            resp += d
        s.close()
        assert resp.startswith(b"HTTP/1.1 %d " % want), (raw[:40], resp[:80])
    assert daemon.request("GET", "/health")[0] == 200


def test_keepalive_and_chunked(daemon):
    c = UnixHTTPConnection(daemon.sock)
    for _ in range(3):
        c.request("GET", "/version")
        r = c.getresponse()
        assert r.status == 200 and json.loads(r.read())["api"] == 1
    # a chunked body (an invalid VM, so nothing boots)
    c.request("POST", "/vms", body=iter([b'{"cpus"', b': 0}']),
              headers={"Transfer-Encoding": "chunked"}, encode_chunked=True)
    r = c.getresponse()
    assert r.status == 400 and b"cpus" in r.read()
    c.close()


@pytest.fixture(scope="module")
def web(daemon):
    st, vm = daemon.request("POST", "/vms", {"name": "web", "memory": "256M", "disk": "256M",
                                             "env": ["FOO=bar"]})
    assert st == 201, vm
    assert vm["state"] == "running" and vm["persistent"] and vm["pid"] > 0
    return vm


def test_create_named(daemon, web):
    st, vm = daemon.request("GET", "/vms/web")
    assert st == 200 and vm["id"] == web["id"]
    assert daemon.request("GET", "/vms/" + web["id"][:4])[1]["id"] == web["id"]
    assert os.path.exists(os.path.join(web["vmdir"], "vm.json"))
    assert os.path.exists(os.path.join(web["vmdir"], "disk.img"))
    st, e = daemon.request("POST", "/vms", {"name": "web"})
    assert st == 409 and e["code"] == "name_taken"


def test_exec_upgrade(daemon, web):
    r = daemon.run("web", ["sh", "-c", "echo out; echo err >&2; echo $FOO; exit 7"])
    assert r["status"] == 7
    assert r["stdout"] == b"out\nbar\n" and r["stderr"] == b"err\n"
    r = daemon.run("web", ["cat"], stdin=bytes(range(256)) * 4096)
    assert r["status"] == 0 and r["stdout"] == bytes(range(256)) * 4096
    r = daemon.run("web", ["echo $X"], shell=True, env=["X=over", "FOO=ignored"])
    assert r["stdout"] == b"over\n"


def test_exec_errors(daemon, web):
    with pytest.raises(RuntimeError, match="400"):
        daemon.exec_stream("web", {"argv": []})
    with pytest.raises(RuntimeError, match="404"):
        daemon.exec_stream("nope", {"argv": ["true"]})
    # no Upgrade header
    st, e = daemon.request("POST", "/vms/web/exec", {"argv": ["true"]})
    assert st == 400 and "Upgrade" in e["error"]


def test_files(daemon, web):
    data = os.urandom(3 * 1024 * 1024 + 17)
    st, _ = daemon.request("PUT", "/vms/web/files?path=/root/blob.bin&mode=0600", data)
    assert st == 204
    st, got = daemon.request("GET", "/vms/web/files?path=/root/blob.bin", raw=True)
    assert st == 200 and got == data
    r = daemon.run("web", ["stat", "-c", "%a", "/root/blob.bin"])
    assert r["stdout"] == b"600\n"
    st, e = daemon.request("GET", "/vms/web/files?path=/root/none")
    assert st == 404
    st, e = daemon.request("GET", "/vms/web/files?path=relative")
    assert st == 400
    # a name with spaces, percent-encoded
    st, _ = daemon.request("PUT", "/vms/web/files?path=/tmp/a%20b", b"")
    assert st == 204
    assert daemon.request("GET", "/vms/web/files?path=/tmp/a%20b", raw=True) == (200, b"")


def test_logs(daemon, web):
    st, text = daemon.request("GET", "/vms/web/logs?source=serial&tail=5", raw=True)
    assert st == 200 and text.count(b"\n") <= 5
    # the agent's own console lines only: make it write one, then find it there and nowhere else
    daemon.run("web", ["sh", "-c", "echo 'capsem-agent: marker-7f3' > /dev/console; echo other > /dev/console"])
    st, text = daemon.request("GET", "/vms/web/logs?source=agent", raw=True)
    assert st == 200 and b"marker-7f3" in text and b"other" not in text, text
    assert daemon.request("GET", "/vms/web/logs?source=nope")[0] == 400


def test_stop_start_keeps_root(daemon, web):
    mounts = daemon.run("web", ["cat", "/proc/mounts"])["stdout"]
    assert b"/dev/vda /root " in mounts, "the image's init must mount the VM disk on /root"
    r = daemon.run("web", ["sh", "-c", "echo kept > /root/state; sync"])
    assert r["status"] == 0
    st, vm = daemon.request("POST", "/vms/web/stop")
    assert st == 200 and vm["state"] == "stopped" and vm["pid"] is None
    assert daemon.request("POST", "/vms/web/stop")[1]["code"] == "not_running"
    with pytest.raises(RuntimeError, match="409"):
        daemon.exec_stream("web", {"argv": ["true"]})
    st, vm = daemon.request("POST", "/vms/web/start")
    assert st == 200 and vm["state"] == "running", vm
    r = daemon.run("web", ["cat", "/root/state"])
    assert r["stdout"] == b"kept\n", r
    st, e = daemon.request("POST", "/vms/web/start")
    assert st == 409 and e["code"] == "already_running"


def test_restart(daemon, web):
    st, vm = daemon.request("POST", "/vms/web/restart")
    assert st == 200 and vm["state"] == "running"
    assert daemon.run("web", ["true"])["status"] == 0


def test_daemon_kill9_readopts(daemon, web):
    st, before = daemon.request("GET", "/vms/web")
    daemon.kill9()
    assert os.path.exists(f"/proc/{before['pid']}"), "the VM died with the daemon"
    daemon.start()
    st, vm = daemon.request("GET", "/vms/web")
    assert vm["state"] == "running" and vm["pid"] == before["pid"]
    assert daemon.run("web", ["echo", "still here"])["stdout"] == b"still here\n"
    # and it can still be stopped through the new daemon
    st, vm = daemon.request("POST", "/vms/web/stop")
    assert st == 200 and vm["state"] == "stopped"
    wait_for(lambda: not os.path.exists(f"/proc/{before['pid']}"), 30, "capsem-vm to exit")
    st, vm = daemon.request("POST", "/vms/web/start")
    assert st == 200
    # the disk written before the daemon was killed survived the restart and a stop/start
    assert daemon.run("web", ["cat", "/root/state"])["stdout"] == b"kept\n"


def test_supervisor_kill9_is_crash(daemon, web):
    st, vm = daemon.request("GET", "/vms/web")
    os.kill(vm["pid"], signal.SIGKILL)
    vm = wait_for(lambda: (lambda v: v if v["state"] == "crashed" else None)(
        daemon.request("GET", "/vms/web")[1]), 30, "the VM to be marked crashed")
    assert "signal 9" in vm["error"] and vm["pid"] is None
    # restartable
    st, vm = daemon.request("POST", "/vms/web/start")
    assert st == 200 and vm["state"] == "running" and vm["error"] is None


def test_supervisor_dies_while_daemon_down(daemon, web):
    st, vm = daemon.request("GET", "/vms/web")
    daemon.kill9()
    os.kill(vm["pid"], signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{vm['pid']}"), 30, "capsem-vm to die")
    daemon.start()
    st, vm = daemon.request("GET", "/vms/web")
    assert vm["state"] == "crashed"
    assert vm["error"] == "supervisor gone while capsemd was down"


def test_ephemeral_deleted_on_stop(daemon):
    st, vm = daemon.request("POST", "/vms", {"memory": "256M"})
    assert st == 201 and vm["name"] is None and not vm["persistent"]
    assert daemon.run(vm["id"], ["true"])["status"] == 0
    st, r = daemon.request("POST", f"/vms/{vm['id']}/stop")
    assert st == 200 and r == {"deleted": vm["id"]}
    assert daemon.request("GET", f"/vms/{vm['id']}")[0] == 404
    assert not os.path.exists(vm["vmdir"])


def test_persist_and_delete(daemon):
    st, vm = daemon.request("POST", "/vms", {"memory": "256M"})
    assert st == 201
    st, e = daemon.request("POST", f"/vms/{vm['id']}/persist", {"name": "web"})
    assert st == 409
    st, p = daemon.request("POST", f"/vms/{vm['id']}/persist", {"name": "kept"})
    assert st == 200 and p["persistent"] and p["name"] == "kept"
    st, r = daemon.request("DELETE", "/vms/kept")
    assert st == 200 and r == {"deleted": vm["id"]}
    assert not os.path.exists(vm["vmdir"])


def test_four_vms_interleaved(daemon):
    vms = []
    errs = []

    def create(i):
        try:
            st, vm = daemon.request("POST", "/vms", {"name": f"m{i}", "memory": "256M",
                                                     "disk": "128M"})
            assert st == 201, vm
            vms.append(vm)
        except Exception as e:  # noqa: BLE001
            errs.append(e)

    ts = [threading.Thread(target=create, args=(i,)) for i in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert not errs, errs
    assert len({v["pid"] for v in vms}) == 4
    results = {}

    def work(name):
        try:
            for k in range(5):
                r = daemon.run(name, ["sh", "-c", f"echo {name}-{k}; hostname"])
                assert r["stdout"] == f"{name}-{k}\n{name}\n".encode(), r
            results[name] = True
        except Exception as e:  # noqa: BLE001
            errs.append(e)

    ts = [threading.Thread(target=work, args=(v["name"],)) for v in vms]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert not errs, errs
    assert len(results) == 4
    for v in vms:
        st, r = daemon.request("DELETE", f"/vms/{v['name']}")
        assert st == 200 and r == {"deleted": v["id"]}
        assert not os.path.exists(v["vmdir"])


def test_purge(daemon):
    st, e1 = daemon.request("POST", "/vms", {"memory": "256M"})
    assert st == 201
    st, r = daemon.request("POST", "/purge")
    assert st == 200 and e1["id"] in r["deleted"]
    ids = {v["id"] for v in daemon.request("GET", "/vms")[1]}
    assert e1["id"] not in ids
