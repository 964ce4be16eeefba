#!/usr/bin/env python3
"""A streamable-HTTP MCP server for tests (MCP 2025-06-18 transport; common.py tools).

POST /mcp with one JSON-RPC message: notifications get 202; requests get the response as
application/json, or as a text/event-stream (one `message` event) when started with --sse.
initialize hands out an Mcp-Session-Id that later requests must carry (else 400; unknown id:
404). Prints "port N" on stdout once listening (port 0 = any free port)."""
import json
import os
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

SSE = "--sse" in sys.argv
sessions = set()
lock = threading.Lock()


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send(self, code, body=b"", ctype="application/json", extra=None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.send(405, b"")

    def do_POST(self):
        if self.path != "/mcp":
            return self.send(404, b"")
        n = int(self.headers.get("Content-Length", "0"))
        try:
            msg = json.loads(self.rfile.read(n))
        except ValueError:
            return self.send(400, b"")
        accept = self.headers.get("Accept", "")
        if "application/json" not in accept or "text/event-stream" not in accept:
            return self.send(406, b"")
        sid = self.headers.get("Mcp-Session-Id")
        extra = {}
        if msg.get("method") == "initialize":
            sid = uuid.uuid4().hex
            with lock:
                sessions.add(sid)
            extra["Mcp-Session-Id"] = sid
        elif sid is None:
            return self.send(400, b"")
        elif sid not in sessions:
            return self.send(404, b"")
        r = common.handle(msg)
        if r is None:
            return self.send(202, b"")
        body = json.dumps(r).encode()
        if SSE:
            ev = b"event: message\ndata: " + body + b"\n\n"
            return self.send(200, ev, "text/event-stream", extra)
        return self.send(200, body, "application/json", extra)


def main():
    port = 0
    for a in sys.argv[1:]:
        if a.startswith("--port="):
            port = int(a.split("=", 1)[1])
    srv = ThreadingHTTPServer(("127.0.0.1", port), H)
    print(f"port {srv.server_address[1]}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
