"""`capsem run` end to end: each test boots its own ephemeral microVM through the CLI and checks
that nothing (process, socket, directory) is left behind."""
import os
import signal
import subprocess
import time

from conftest import CAPSEM, IMAGE, capsem, capsem_env, procs_mentioning, wait_for


def test_uname(home):
    p = capsem(home, "run", "--", "uname", "-a")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(b"Linux ") and b"-capsem" in p.stdout


def test_out_err_exit7(home):
    p = capsem(home, "run", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (p.returncode, p.stdout, p.stderr.splitlines()[-1:]) == (7, b"out\n", [b"err"]), p.stderr


def test_stdin_pipe(home):
    p = capsem(home, "run", "--", "cat", input=b"hello\n")
    assert p.returncode == 0 and p.stdout == b"hello\n", p.stderr


def test_shell_string_env_workdir(home):
    p = capsem(home, "run", "-e", "GREETING=hi there", "-w", "/tmp", "-c", 'echo "$GREETING from $(pwd)"')
    assert p.returncode == 0 and p.stdout == b"hi there from /tmp\n", p.stderr


def test_timeout(home):
    t0 = time.monotonic()
    p = capsem(home, "run", "--timeout", "2", "--", "sleep", "60")
    assert p.returncode == 124, p.stderr
    assert b"timed out" in p.stderr
    assert time.monotonic() - t0 < 55  # killed long before sleep would end


def test_mount(home, tmp_path):
    """`capsem run --mount HOST:GUEST[:ro]`, through the daemon and --direct alike."""
    share = tmp_path / "share"
    share.mkdir()
    (share / "in.txt").write_text("from the host\n")
    p = capsem(home, "run", "--mount", f"{share}:/mnt/share", "--", "sh", "-c",
               "cat /mnt/share/in.txt; echo from the guest > /mnt/share/out.txt")
    assert p.returncode == 0 and p.stdout == b"from the host\n", p.stderr
    assert (share / "out.txt").read_text() == "from the guest\n"
    # read-only, and a relative host path, without the daemon
    os.chdir(tmp_path)
    p = capsem(home, "run", "--direct", "-m", "share:/mnt/ro:ro", "--", "sh", "-c",
               "cat /mnt/ro/in.txt && echo x > /mnt/ro/nope.txt")
    assert p.returncode != 0 and p.stdout == b"from the host\n"
    assert b"Read-only file system" in p.stderr
    assert not (share / "nope.txt").exists()
    for bad in ("nocolon", f"{share}:relative", f"{tmp_path}/missing:/mnt/x"):
        p = capsem(home, "run", "--mount", bad, "--", "true")
        assert p.returncode in (1, 2, 125) and b"mount" in p.stderr.lower(), (bad, p.stderr)


def test_cpus_and_memory(home):
    p = capsem(home, "run", "--cpus", "2", "--memory", "384M", "--", "sh", "-c",
               "nproc; grep MemTotal /proc/meminfo")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.decode().split("\n")
    assert lines[0] == "2"
    kib = int(lines[1].split()[1])
    assert 300 * 1024 < kib <= 384 * 1024


def test_ctrl_c_during_boot(home):
    proc = subprocess.Popen([CAPSEM, "run", "--", "sleep", "120"], env=capsem_env(home),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: any(open(f"/proc/{p}/cmdline", "rb").read().startswith(b"qemu-system")
                         for p in procs_mentioning(str(home))), 60, "QEMU to start")
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(timeout=60)
    assert rc == 130, proc.stderr.read()
    assert not procs_mentioning(str(home))


def test_ctrl_c_during_command(home):
    proc = subprocess.Popen([CAPSEM, "run", "--", "sh", "-c", "echo started; exec sleep 120"],
                            env=capsem_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stdout.readline()
    assert line == b"started\n"
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(timeout=60)
    assert rc == 130  # sleep died of SIGINT in the guest: 128 + 2
    assert not procs_mentioning(str(home))


def test_qemu_killed_mid_run(home):
    proc = subprocess.Popen([CAPSEM, "run", "--", "sh", "-c", "echo started; exec sleep 120"],
                            env=capsem_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"started\n"
    qemu = [p for p in procs_mentioning(str(home))
            if open(f"/proc/{p}/cmdline", "rb").read().startswith(b"qemu-system")]
    assert len(qemu) == 1
    os.kill(qemu[0], signal.SIGKILL)
    rc = proc.wait(timeout=60)
    err = proc.stderr.read()
    assert rc == 125, err
    assert b"VM stopped" in err or b"QEMU" in err or b"lost" in err, err
    assert not procs_mentioning(str(home))


def test_missing_kernel(home):
    p = capsem(home, "run", "--kernel", "/nonexistent/vmlinuz", "--initrd",
               os.path.join(IMAGE, "initrd.img"), "--", "true")
    assert p.returncode == 125
    assert b"/nonexistent/vmlinuz" in p.stderr and b"No such file" in p.stderr


def test_corrupt_kernel(home, tmp_path):
    bad = tmp_path / "vmlinuz"
    bad.write_bytes(b"\x7fELF this is not a kernel" * 100)
    p = capsem(home, "run", "--kernel", str(bad), "--initrd", os.path.join(IMAGE, "initrd.img"),
               "--boot-timeout", "30", "--", "true", timeout=120)
    assert p.returncode == 125
    assert b"QEMU exited" in p.stderr or b"did not say hello" in p.stderr, p.stderr


def test_missing_image(home):
    p = subprocess.run([CAPSEM, "run", "--image", "nope", "--", "true"], capture_output=True,
                       env=capsem_env(home), timeout=30)
    assert p.returncode == 125 and b"image 'nope' not found" in p.stderr


def test_usage_errors(home):
    for args, msg in [(["run"], b"no command"), (["run", "--timeout", "x", "true"], b"--timeout"),
                      (["run", "--memory", "12Q", "true"], b"--memory"),
                      (["run", "--cpus", "0", "true"], b"--cpus"), (["frob"], b"unknown command")]:
        p = capsem(home, *args)
        assert p.returncode == 2 and msg in p.stderr, (args, p.stderr)
    p = capsem(home, "run", "--help")
    assert p.returncode == 0 and b"Usage: capsem run" in p.stdout


def test_tampered_or_truncated_image_is_refused(home, tmp_path):
    import shutil
    images = tmp_path / "images"
    shutil.copytree(IMAGE, images / "minimal")
    env = dict(capsem_env(home), CAPSEM_IMAGES_DIR=str(images))
    initrd = images / "minimal" / "initrd.img"
    data = bytearray(initrd.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit-pattern, same size
    initrd.write_bytes(bytes(data))
    for mode in (["--direct"], []):  # without and through the daemon
        p = subprocess.run([CAPSEM, "run", *mode, "--", "true"], capture_output=True, env=env,
                           timeout=120)
        assert p.returncode == 125, p.stderr
        assert b"initrd.img" in p.stderr and b"verification" in p.stderr, p.stderr
    initrd.write_bytes(bytes(data[:1000]))  # truncated
    p = subprocess.run([CAPSEM, "run", "--direct", "--", "true"], capture_output=True, env=env,
                       timeout=120)
    assert p.returncode == 125 and b"initrd.img" in p.stderr, p.stderr
