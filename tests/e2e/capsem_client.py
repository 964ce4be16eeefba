"""capsem_client.py - a small Python client for Capsem's wire protocol (docs/PROTOCOL.md).

Used by the end-to-end tests and the benchmarks to talk to a guest agent the way `capsem run`
does: connect to <vmdir>/vsock (hybrid vsock), "CONNECT 5001", then frames
u32 BE length | u16 BE type | payload.
"""
import select
import socket
import struct
import time

HELLO, BOOT_CONFIG, SHUTDOWN = 1, 2, 3
EXEC, STDIN, SIGNAL, WINSIZE, STARTED, STDOUT, STDERR, EXIT, ERROR = range(16, 25)
EXEC_TTY, EXEC_SHELL = 1, 2
EXIT_CODE, EXIT_SIGNAL, EXIT_TIMEOUT = 0, 1, 2
PORT_EXEC = 5001


def frame(t, payload=b""):
    return struct.pack(">IH", len(payload), t) + payload


def _s(b):
    if isinstance(b, str):
        b = b.encode()
    return struct.pack(">I", len(b)) + b


def exec_payload(argv, env=(), cwd=None, flags=0, timeout_ms=0, rows=24, cols=80):
    p = struct.pack(">IIHHB", flags, timeout_ms, rows, cols, 1 if cwd else 0)
    if cwd:
        p += _s(cwd)
    p += struct.pack(">I", len(argv)) + b"".join(_s(a) for a in argv)
    p += struct.pack(">I", len(env)) + b"".join(_s(e) for e in env)
    return p


class Result:
    def __init__(self):
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.kind = None
        self.code = None
        self.error = None
        self.pid = None

    @property
    def status(self):
        if self.kind == EXIT_CODE:
            return self.code
        if self.kind == EXIT_SIGNAL:
            return 128 + self.code
        if self.kind == EXIT_TIMEOUT:
            return 124
        return None

    def __repr__(self):
        return (f"Result(kind={self.kind}, code={self.code}, stdout={bytes(self.stdout[:200])!r}, "
                f"stderr={bytes(self.stderr[:200])!r}, error={self.error!r})")


def connect(vsock_path, port=PORT_EXEC, timeout=30):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(vsock_path)
    s.sendall(b"CONNECT %d\n" % port)
    line = b""
    while not line.endswith(b"\n"):
        c = s.recv(1)
        if not c:
            raise ConnectionRefusedError(f"guest refused port {port}")
        line += c
        if len(line) > 32:
            raise ValueError("bad hybrid vsock reply")
    if not line.startswith(b"OK "):
        raise ValueError(f"bad hybrid vsock reply {line!r}")
    return s


def session(s, first=b"", stdin=b"", io_timeout=120, on_started=None):
    """Drive one exec session on a connected socket: send `first` (the EXEC frame, unless the
    other side already sent it), stream stdin (bytes, or None to leave it open until exit), and
    collect frames until EXIT or ERROR. Returns a Result; the socket is left open."""
    s.setblocking(False)
    out = bytearray(first)
    if stdin is not None:
        for i in range(0, len(stdin), 65536):
            out += frame(STDIN, stdin[i:i + 65536])
        out += frame(STDIN)
    res = Result()
    buf = bytearray()
    deadline = time.monotonic() + io_timeout
    while res.kind is None and res.error is None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no EXIT within {io_timeout} s: {res!r}")
        r, w, _ = select.select([s], [s] if out else [], [], left)
        if w:
            try:
                n = s.send(out)
                del out[:n]
            except (BrokenPipeError, ConnectionResetError):
                out.clear()  # the command exited before it read all of its stdin
        if r:
            d = s.recv(1 << 20)
            if not d:
                raise ConnectionError(f"connection closed before EXIT: {res!r}")
            buf += d
            while len(buf) >= 6:
                ln, t = struct.unpack(">IH", buf[:6])
                if len(buf) < 6 + ln:
                    break
                pl = bytes(buf[6:6 + ln])
                del buf[:6 + ln]
                if t == STDOUT:
                    res.stdout += pl
                elif t == STDERR:
                    res.stderr += pl
                elif t == STARTED:
                    res.pid = struct.unpack(">I", pl)[0]
                    if on_started:
                        on_started(s, res)
                elif t == EXIT:
                    res.kind, res.code = struct.unpack(">Bi", pl[:5])
                elif t == ERROR:
                    code, n = struct.unpack(">iI", pl[:8])
                    res.error = pl[8:8 + n].decode(errors="replace")
                else:
                    raise ValueError(f"unexpected frame type {t}")
    return res


def run(vsock_path, argv, stdin=b"", env=(), cwd=None, flags=0, timeout_ms=0, io_timeout=120,
        on_started=None):
    """Run argv in the guest through the VM's hybrid vsock socket; return a Result."""
    s = connect(vsock_path)
    try:
        return session(s, frame(EXEC, exec_payload(argv, env, cwd, flags, timeout_ms)), stdin,
                       io_timeout, on_started)
    finally:
        s.close()


def sh(vsock_path, script, **kw):
    return run(vsock_path, [script], flags=EXEC_SHELL | kw.pop("flags", 0), **kw)
