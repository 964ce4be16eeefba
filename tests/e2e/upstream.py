"""A hermetic upstream for the egress tests: HTTPS (its own throw-away CA) and plain HTTP on
127.0.0.1, standing in for the internet. The proxy reaches it through the policy's
[[upstream.override]] entries, so a guest's request to https://upstream.test/... or to
https://api.anthropic.com/v1/messages ends here and never leaves the machine.

Endpoints: /hello, /echo (the request as JSON: method, path, headers, body), /sse (events one by
one with a delay), /gzip (a gzip-encoded body), /big?mib=N, /ws (a WebSocket echo), and the AI
providers' endpoints (/v1/messages, /v1/chat/completions, /v1/responses, /v1beta/models/...)
answered from tests/data/ai transcripts. Every request and TCP connection is counted.
"""
import base64
import gzip
import hashlib
import http.server
import json
import os
import socket
import socketserver
import ssl
import subprocess
import threading
import time
import urllib.parse

# "*.wild.test": the names a one-label wildcard rule lets a guest choose (test_egress.py)
NAMES = ["upstream.test", "api.anthropic.com", "api.openai.com",
         "generativelanguage.googleapis.com", "blocked.test", "*.wild.test"]
DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "ai")


def make_ca(d):
    """A test CA and a leaf for NAMES signed by it; returns (ca.crt, leaf.crt, leaf.key)."""
    ca_key, ca_crt = os.path.join(d, "ca.key"), os.path.join(d, "ca.crt")
    key, csr, crt = (os.path.join(d, n) for n in ("up.key", "up.csr", "up.crt"))
    ext = os.path.join(d, "ext")
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", ca_key, "-out", ca_crt, "-days", "2", "-subj", "/CN=capsem-test-ca")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", csr, "-subj", "/CN=upstream.test")
    with open(ext, "w") as f:
        f.write("subjectAltName=" + ",".join("DNS:" + n for n in NAMES) + ",IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
        "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext)
    return ca_crt, crt, key


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.connections = 0
        self.requests = []  # (method, path, headers dict)

    def add_request(self, method, path, headers):
        with self.lock:
            self.requests.append((method, path, dict(headers)))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "capsem-test-upstream"

    def log_message(self, *a):
        pass

    def setup(self):
        super().setup()
        with self.server.stats.lock:
            self.server.stats.connections += 1

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            return self.rfile.read(n)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return b""

    def _send(self, code, body, ctype="text/plain", extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _chunk(self, b):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
        self.wfile.flush()

    def handle_any(self):
        u = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(u.query)
        body = self._body()
        self.server.stats.add_request(self.command, self.path, self.headers)
        p = u.path
        self._served = getattr(self, "_served", 0) + 1
        if p == "/once":
            # a keep-alive connection the server drops as the next request arrives (the race
            # of a pooled connection closed by an idle timeout): no response, just the close
            if self._served > 1:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            return self._send(200, b"once\n")
        if p == "/hello":
            return self._send(200, b"hello from upstream\n")
        if p == "/echo" or p.startswith("/admin") or p.startswith("/echo/"):
            doc = {"method": self.command, "path": self.path, "headers": dict(self.headers),
                   "body": body.decode("latin-1")}
            return self._send(200, json.dumps(doc).encode(), "application/json")
        if p == "/sse":
            n, delay = int(q.get("n", ["5"])[0]), float(q.get("delay", ["0.3"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(n):
                self._chunk(b"data: event %d t=%.3f\n\n" % (i, time.time()))
                time.sleep(delay)
            self._chunk(b"")
            return
        if p == "/gzip":
            raw = b"compressed hello " * 100
            return self._send(200, gzip.compress(raw, mtime=0), "text/plain",
                              [("Content-Encoding", "gzip")])
        if p == "/big":
            mib = int(q.get("mib", ["1"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(mib << 20))
            self.end_headers()
            block = b"\xab" * (1 << 20)
            for _ in range(mib):
                self.wfile.write(block)
            return
        if p == "/ws":
            return self._websocket()
        if p in ("/v1/messages", "/v1/chat/completions", "/v1/responses") or \
                p.startswith("/v1beta/models/"):
            return self._ai(p, q, body)
        return self._send(404, b"not found\n")

    def _ai(self, p, q, body):
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            req = {}
        stream = bool(req.get("stream")) or "streamGenerateContent" in p
        files = {"/v1/messages": ("anthropic-messages.json", "anthropic-messages-stream.sse"),
                 "/v1/chat/completions": ("openai-chat.json", "openai-chat-stream.sse"),
                 "/v1/responses": ("openai-responses.json", "openai-responses-stream.sse")}
        f = os.path.join(DATA, files.get(p, ("gemini-generate.json", "gemini-stream.sse"))[stream])
        try:
            data = open(f, "rb").read()
        except OSError:
            return self._send(500, b"no transcript " + f.encode())
        if not stream:
            return self._send(200, data, "application/json")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for part in data.split(b"\n\n"):
            if part.strip():
                self._chunk(part + b"\n\n")
        self._chunk(b"")

    def _websocket(self):
        key = self.headers.get("Sec-WebSocket-Key", "")
        acc = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", acc)
        self.end_headers()
        self.wfile.flush()
        # after the closing handshake the server closes the TCP connection (RFC 6455 §7.1.1):
        # never back to HTTP keep-alive
        self.close_connection = True
        rf, wf = self.rfile, self.wfile
        while True:
            h = rf.read(2)
            if len(h) < 2:
                return
            op, ln = h[0] & 0x0F, h[1] & 0x7F
            if ln == 126:
                ln = int.from_bytes(rf.read(2), "big")
            elif ln == 127:
                ln = int.from_bytes(rf.read(8), "big")
            mask = rf.read(4) if h[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(rf.read(ln)))
            if op == 8:
                wf.write(b"\x88\x00")
                wf.flush()
                return
            if op in (1, 2):
                out = b"echo: " + data
                hdr = bytes([0x80 | op])
                hdr += bytes([len(out)]) if len(out) < 126 else b"\x7e" + len(out).to_bytes(2, "big")
                wf.write(hdr + out)
                wf.flush()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = handle_any


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Upstream:
    """HTTPS and HTTP servers on ephemeral ports; .https_port, .http_port, .ca (PEM path)."""

    def __init__(self, d):
        self.ca, crt, key = make_ca(d)
        self.stats = Stats()
        self.https = Server(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, key)
        self.https.socket = ctx.wrap_socket(self.https.socket, server_side=True)
        self.https.stats = self.stats
        self.http = Server(("127.0.0.1", 0), Handler)
        self.http.stats = self.stats
        self.https_port = self.https.server_address[1]
        self.http_port = self.http.server_address[1]
        for s in (self.https, self.http):
            threading.Thread(target=s.serve_forever, daemon=True).start()

    def close(self):
        for s in (self.https, self.http):
            s.shutdown()
            s.server_close()


def raw_echo_server():
    """A plain TCP server that answers each connection with 'raw:' + what it read until EOF."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)

    def serve():
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            def one(c=c):
                data = b""
                while True:
                    b = c.recv(65536)
                    if not b:
                        break
                    data += b
                c.sendall(b"raw:" + data)
                c.close()
            threading.Thread(target=one, daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    return ls
