"""A hermetic upstream for the egress tests: HTTPS (its own throw-away CA) and plain HTTP on
127.0.0.1, standing in for the internet. The proxy reaches it through the policy's
[[upstream.override]] entries, so a guest's request to https://upstream.test/... or to
https://api.anthropic.com/v1/messages ends here and never leaves the machine.

Endpoints: /hello, /echo (the request as JSON: method, path, headers, body), /sse (events one by
one with a delay), /gzip (a gzip-encoded body), /big?mib=N, /ws (a WebSocket echo), and the AI
providers' endpoints (/v1/messages, /v1/chat/completions, /v1/responses, /v1beta/models/...)
answered from tests/data/ai transcripts. Every request and TCP connection is counted.

Keys are enforced like the providers do it: every request to a provider's API host
(api.anthropic.com, api.openai.com, generativelanguage.googleapis.com, api.github.com,
github.com), and every AI endpoint path whatever the host, must carry that provider's real key
(KEYS) where the provider reads it, or gets the provider's own refusal: Anthropic 401
authentication_error (x-api-key or Authorization: Bearer), OpenAI 401 invalid_api_key
(Authorization: Bearer), Gemini 403 PERMISSION_DENIED without a key and 400 API_KEY_INVALID with
a wrong one (x-goog-api-key or ?key=, as Google answers), GitHub 401 "Bad credentials" /
"Requires authentication" (Authorization: token, Bearer or Basic with the token as user or
password; git gets a WWW-Authenticate: Basic challenge). A test double more lenient than the
service would let a missing credential pass.

A request whose body holds "capsem-probe-<word>" (an agent's prompt) is answered in the
provider's real response shape (streamed when the request streams) with the text
"capsem-answer-<word>" and token usage, so a CLI prints an answer the test can look for; other
requests get the transcripts; /v1/responses also takes a WebSocket (OpenAI's WebSocket mode, each
response.create message answered with the events). github.com serves git's smart HTTP protocol
(`git http-backend`) for the bare repositories made with Upstream.git_repo(); api.github.com
answers GET /user.
"""
import base64
import gzip
import hashlib
import http.server
import json
import os
import re
import socket
import socketserver
import ssl
import subprocess
import threading
import time
import urllib.parse

# "*.wild.test": the names a one-label wildcard rule lets a guest choose (test_egress.py)
NAMES = ["upstream.test", "api.anthropic.com", "api.openai.com",
         "generativelanguage.googleapis.com", "github.com", "api.github.com", "blocked.test",
         "*.wild.test"]
# The "real" keys the stand-in accepts: the host's credentials file gives them to the proxy,
# the guest only ever sees the placeholders (docs/POLICY.md, Credentials).
KEYS = {
    "anthropic": "sk-ant-api03-REALKEY-0123456789abcdef-never-in-the-guest",
    "openai": "sk-proj-REALKEY-0123456789abcdef-never-in-the-guest",
    "gemini": "AIzaSyREALKEY-0123456789abcdef-never-in-the-guest",
    "github": "ghp_REALTOKEN0123456789abcdefneverintheguest",
}
PROVIDER_HOSTS = {"api.anthropic.com": "anthropic", "api.openai.com": "openai",
                  "generativelanguage.googleapis.com": "gemini", "api.github.com": "github",
                  "github.com": "github"}
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
        self.auth = []  # (provider, method, path, "ok" | "missing" | "wrong")

    def add_request(self, method, path, headers):
        with self.lock:
            self.requests.append((method, path, dict(headers)))

    def add_auth(self, provider, method, path, verdict):
        with self.lock:
            self.auth.append((provider, method, path, verdict))


def provider_of(host, path):
    """The provider whose key a request needs: by its Host (the API hosts), else by an AI
    endpoint's path (whatever the host), else None."""
    h = host.strip().lower().rstrip(".")
    if h.startswith("["):
        h = h.split("]")[0] + "]"
    elif ":" in h:
        h = h.rsplit(":", 1)[0]
    if h in PROVIDER_HOSTS:
        return PROVIDER_HOSTS[h]
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return "anthropic"
    if path in ("/v1/chat/completions", "/v1/responses", "/v1/models"):
        return "openai"
    if path.startswith("/v1beta/"):
        return "gemini"
    return None


def presented_keys(provider, headers, query):
    """Every value a request offers as its key, where that provider reads keys."""
    auth = headers.get("Authorization") or ""
    scheme, _, cred = auth.strip().partition(" ")
    scheme, cred = scheme.lower(), cred.strip()
    out = []
    if provider == "anthropic":
        out += [headers.get("x-api-key")] + ([cred] if scheme == "bearer" else [])
    elif provider == "openai":
        out += [cred] if scheme == "bearer" else []
    elif provider == "gemini":
        out += [headers.get("x-goog-api-key")] + query.get("key", [])
    elif provider == "github":
        if scheme in ("token", "bearer"):
            out.append(cred)
        elif scheme == "basic":
            try:
                user, _, pw = base64.b64decode(cred, validate=True).decode().partition(":")
                out += [user, pw]
            except (ValueError, UnicodeDecodeError):
                out.append("?")
    return [k for k in out if k]


def check_key(provider, headers, query):
    """"ok" when the provider's real key is among the presented ones, else "missing" or
    "wrong"."""
    keys = presented_keys(provider, headers, query)
    if KEYS[provider] in keys:
        return "ok"
    return "wrong" if keys else "missing"


def masked(k):
    return k[:8] + "*" * 10 + k[-4:] if len(k) > 12 else "*" * len(k)


def refusal(provider, verdict, headers, query, git=False):
    """(status, body, content type, extra headers): the provider's own answer to a request
    without its key (the shapes their APIs return)."""
    keys = presented_keys(provider, headers, query)
    if provider == "anthropic":
        msg = "x-api-key header is required" if verdict == "missing" else "invalid x-api-key"
        rid = "req_011CapsemStandInRefusal"
        doc = {"type": "error", "error": {"type": "authentication_error", "message": msg},
               "request_id": rid}
        return 401, doc, "application/json", [("request-id", rid)]
    if provider == "openai":
        if verdict == "missing":
            doc = {"error": {"message": "You didn't provide an API key. You need to provide your "
                             "API key in an Authorization header using Bearer auth (i.e. "
                             "Authorization: Bearer YOUR_KEY), or as the password field (with "
                             "blank username) if you're accessing the API from your browser "
                             "and are prompted for a username and password. You can obtain an "
                             "API key from https://platform.openai.com/account/api-keys.",
                             "type": "invalid_request_error", "param": None, "code": None}}
        else:
            doc = {"error": {"message": f"Incorrect API key provided: {masked(keys[0])}. You "
                             "can find your API key at "
                             "https://platform.openai.com/account/api-keys.",
                             "type": "invalid_request_error", "param": None,
                             "code": "invalid_api_key"}}
        return 401, doc, "application/json", []
    if provider == "gemini":
        if verdict == "missing":
            doc = {"error": {"code": 403, "message": "Method doesn't allow unregistered callers "
                             "(callers without established identity). Please use API Key or "
                             "other form of API consumer identity to call this API.",
                             "status": "PERMISSION_DENIED"}}
            return 403, doc, "application/json; charset=UTF-8", []
        doc = {"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                         "status": "INVALID_ARGUMENT",
                         "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                      "reason": "API_KEY_INVALID", "domain": "googleapis.com",
                                      "metadata": {"service":
                                                   "generativelanguage.googleapis.com"}}]}}
        return 400, doc, "application/json; charset=UTF-8", []
    if git:
        text = ("Invalid username or token. Password authentication is not supported for Git "
                "operations.\n") if verdict == "wrong" else ""
        return 401, text, "text/plain", [("WWW-Authenticate", 'Basic realm="GitHub"')]
    msg = "Requires authentication" if verdict == "missing" else "Bad credentials"
    return 401, {"message": msg, "documentation_url": "https://docs.github.com/rest",
                 "status": "401"}, "application/json; charset=utf-8", []


PROBE = re.compile(rb"capsem-probe-([A-Za-z0-9]+)")


def answer_text(body):
    """The answer to an agent's prompt ("capsem-probe-<word>" anywhere in the request), or
    None."""
    m = PROBE.search(body or b"")
    return "capsem-answer-" + m.group(1).decode() if m else None


def sse(events):
    """text/event-stream bytes of [(event name or None, JSON-able data)]."""
    out = []
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        out.append((f"event: {name}\n" if name else "") + f"data: {text}\n\n")
    return [e.encode() for e in out]


def anthropic_answer(model, text, stream):
    usage = {"input_tokens": 321, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
             "output_tokens": 12, "service_tier": "standard"}
    msg = {"id": "msg_01CapsemStandIn", "type": "message", "role": "assistant", "model": model,
           "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
           "stop_sequence": None, "usage": usage}
    if not stream:
        return msg
    start = dict(msg, content=[], stop_reason=None, usage=dict(usage, output_tokens=1))
    return sse([("message_start", {"type": "message_start", "message": start}),
                ("content_block_start", {"type": "content_block_start", "index": 0,
                                         "content_block": {"type": "text", "text": ""}}),
                ("ping", {"type": "ping"}),
                ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                         "delta": {"type": "text_delta", "text": text}}),
                ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                ("message_delta", {"type": "message_delta",
                                   "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                   "usage": {"output_tokens": 12}}),
                ("message_stop", {"type": "message_stop"})])


def responses_events(model, text):
    """The OpenAI Responses API's events for one text answer (SSE events or WebSocket frames)."""
    item = {"id": "msg_capsem_stand_in", "type": "message", "status": "completed",
            "role": "assistant", "content": [{"type": "output_text", "text": text,
                                              "annotations": []}]}
    usage = {"input_tokens": 321, "input_tokens_details": {"cached_tokens": 0},
             "output_tokens": 12, "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": 333}
    resp = {"id": "resp_capsem_stand_in", "object": "response", "created_at": int(time.time()),
            "status": "in_progress", "error": None, "incomplete_details": None, "model": model,
            "output": [], "usage": None}
    ev = [("response.created", {"type": "response.created", "response": resp}),
          ("response.in_progress", {"type": "response.in_progress", "response": resp}),
          ("response.output_item.added", {"type": "response.output_item.added", "output_index": 0,
                                          "item": dict(item, status="in_progress", content=[])}),
          ("response.content_part.added", {"type": "response.content_part.added",
                                           "item_id": item["id"], "output_index": 0,
                                           "content_index": 0,
                                           "part": {"type": "output_text", "text": "",
                                                    "annotations": []}}),
          ("response.output_text.delta", {"type": "response.output_text.delta",
                                          "item_id": item["id"], "output_index": 0,
                                          "content_index": 0, "delta": text}),
          ("response.output_text.done", {"type": "response.output_text.done",
                                         "item_id": item["id"], "output_index": 0,
                                         "content_index": 0, "text": text}),
          ("response.content_part.done", {"type": "response.content_part.done",
                                          "item_id": item["id"], "output_index": 0,
                                          "content_index": 0, "part": item["content"][0]}),
          ("response.output_item.done", {"type": "response.output_item.done", "output_index": 0,
                                         "item": item}),
          ("response.completed", {"type": "response.completed",
                                  "response": dict(resp, status="completed", output=[item],
                                                   usage=usage)})]
    for i, (_, d) in enumerate(ev):
        d["sequence_number"] = i
    return ev


def openai_answer(path, model, text, stream):
    if path == "/v1/responses":
        ev = responses_events(model, text)
        return sse(ev) if stream else ev[-1][1]["response"]
    usage = {"prompt_tokens": 321, "completion_tokens": 12, "total_tokens": 333}
    base = {"id": "chatcmpl-CapsemStandIn", "created": int(time.time()), "model": model}
    if not stream:
        return dict(base, object="chat.completion", usage=usage, choices=[{
            "index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": None, "finish_reason": "stop"}])
    chunk = lambda delta, fin, u=None: dict(base, object="chat.completion.chunk", usage=u,
                                            choices=[{"index": 0, "delta": delta,
                                                      "logprobs": None, "finish_reason": fin}])
    return sse([(None, chunk({"role": "assistant", "content": ""}, None)),
                (None, chunk({"content": text}, None)), (None, chunk({}, "stop")),
                (None, dict(base, object="chat.completion.chunk", choices=[], usage=usage)),
                (None, "[DONE]")])


def schema_value(schema):
    """A small value that satisfies a JSON schema (Gemini's JSON mode: the CLI's router and
    checks ask for JSON and retry until it parses). An enum prefers "user", so a "who speaks
    next" check hands the turn back."""
    if not isinstance(schema, dict):
        return None
    if schema.get("enum"):
        return "user" if "user" in schema["enum"] else schema["enum"][0]
    t = str(schema.get("type", "object")).lower()
    if t == "object":
        props = schema.get("properties") or {}
        return {k: schema_value(v) for k, v in props.items()}
    if t == "array":
        return []
    if t in ("number", "integer"):
        return schema.get("minimum", 1)
    if t == "boolean":
        return False
    return "capsem stand-in"


def gemini_answer(model, text, stream):
    doc = {"candidates": [{"content": {"parts": [{"text": text}], "role": "model"},
                           "finishReason": "STOP", "index": 0}],
           "usageMetadata": {"promptTokenCount": 321, "candidatesTokenCount": 12,
                             "totalTokenCount": 333,
                             "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 321}]},
           "modelVersion": model, "responseId": "CapsemStandInResponse"}
    return sse([(None, doc)]) if stream else doc


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
        provider = provider_of(self.headers.get("Host", ""), p)
        if provider:
            verdict = check_key(provider, self.headers, q)
            self.server.stats.add_auth(provider, self.command, p, verdict)
            if verdict != "ok":
                code, doc, ctype, extra = refusal(provider, verdict, self.headers, q,
                                                  git=self._host() == "github.com")
                data = doc.encode() if isinstance(doc, str) else json.dumps(doc).encode()
                return self._send(code, data, ctype, extra)
            if provider == "github":
                return self._github(u, body)
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
                time.sleep(delay)  # the point: events spaced in time (streaming is tested)
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
        if p == "/v1/responses" and self.headers.get("Upgrade", "").lower() == "websocket":
            return self._responses_websocket()
        if p in ("/v1/messages", "/v1/chat/completions", "/v1/responses") or \
                p.startswith("/v1beta/models/"):
            return self._ai(p, q, body)
        if provider:
            return self._provider_404(provider, p)
        return self._send(404, b"not found\n")

    def _host(self):
        return self.headers.get("Host", "").lower().split(":")[0].rstrip(".")

    def _provider_404(self, provider, p):
        if provider == "anthropic":
            doc = {"type": "error", "error": {"type": "not_found_error",
                                              "message": f"Not Found: {p}"}}
        elif provider == "openai":
            doc = {"error": {"message": f"Invalid URL ({self.command} {p})",
                             "type": "invalid_request_error", "param": None, "code": None}}
        elif provider == "gemini":
            doc = {"error": {"code": 404, "message": f"Not found: {p}", "status": "NOT_FOUND"}}
        else:
            doc = {"message": "Not Found", "documentation_url": "https://docs.github.com/rest",
                   "status": "404"}
        return self._send(404, json.dumps(doc).encode(), "application/json")

    def _github(self, u, body):
        """api.github.com: GET /user; github.com: git's smart HTTP through `git http-backend`
        over the bare repositories under the server's git root."""
        if self._host() == "api.github.com":
            if u.path == "/user" and self.command in ("GET", "HEAD"):
                doc = {"login": "capsem-test", "id": 4242, "type": "User",
                       "name": "Capsem Test"}
                return self._send(200, json.dumps(doc).encode(),
                                  "application/json; charset=utf-8")
            return self._provider_404("github", u.path)
        root = getattr(self.server, "git_root", None)
        if not root:
            return self._send(404, b"Not Found\n")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_PROJECT_ROOT": root,
               "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": u.path, "QUERY_STRING": u.query,
               "REQUEST_METHOD": self.command, "CONTENT_LENGTH": str(len(body)),
               "CONTENT_TYPE": self.headers.get("Content-Type", ""),
               "REMOTE_USER": "x-access-token", "REMOTE_ADDR": "127.0.0.1",
               "GIT_CONFIG_NOSYSTEM": "1", "HOME": root}
        for h in ("Content-Encoding", "Git-Protocol"):
            if self.headers.get(h):
                env["HTTP_" + h.upper().replace("-", "_")] = self.headers[h]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        r = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True,
                           timeout=120)
        head, sep, out = r.stdout.partition(b"\r\n\r\n")
        if not sep:
            head, sep, out = r.stdout.partition(b"\n\n")
        code, ctype, extra = 200, "text/plain", []
        for line in head.decode("latin-1").splitlines():
            k, _, v = line.partition(":")
            if k.lower() == "status":
                code = int(v.split()[0])
            elif k.lower() == "content-type":
                ctype = v.strip()
            elif k.strip():
                extra.append((k.strip(), v.strip()))
        if r.returncode != 0 and code == 200:
            return self._send(500, r.stderr[-2000:])
        return self._send(code, out, ctype, extra)

    def _ai(self, p, q, body):
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            req = {}
        if not isinstance(req, dict):
            req = {}
        stream = bool(req.get("stream")) or "streamGenerateContent" in p
        text = answer_text(body)
        if text is not None:
            return self._answer(p, q, req, text, stream)
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

    def _answer(self, p, q, req, text, stream):
        """An agent's prompt answered in the provider's own shape."""
        if p.startswith("/v1beta/models/"):
            model = p[len("/v1beta/models/"):].split(":")[0]
            gc = req.get("generationConfig") or {}
            if str(gc.get("responseMimeType", "")).startswith("application/json"):
                text = json.dumps(schema_value(gc.get("responseJsonSchema") or
                                               gc.get("responseSchema") or {}))
            if ":streamGenerateContent" in p and q.get("alt", [""])[0] != "sse":
                # without alt=sse Gemini streams one JSON array
                data = json.dumps([gemini_answer(model, text, False)]).encode()
                return self._send(200, data, "application/json; charset=UTF-8")
            out = gemini_answer(model, text, stream)
        elif p == "/v1/messages":
            out = anthropic_answer(str(req.get("model", "claude")), text, stream)
        else:
            out = openai_answer(p, str(req.get("model", "gpt")), text, stream)
        if not stream:
            return self._send(200, json.dumps(out).encode(), "application/json")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for part in out:
            self._chunk(part)
        self._chunk(b"")

    def _ws_accept(self):
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

    def _ws_read(self):
        """(opcode, payload) of the next frame from the client, None at EOF."""
        rf = self.rfile
        h = rf.read(2)
        if len(h) < 2:
            return None
        op, ln = h[0] & 0x0F, h[1] & 0x7F
        if ln == 126:
            ln = int.from_bytes(rf.read(2), "big")
        elif ln == 127:
            ln = int.from_bytes(rf.read(8), "big")
        mask = rf.read(4) if h[1] & 0x80 else b"\0\0\0\0"
        return op, bytes(b ^ mask[i % 4] for i, b in enumerate(rf.read(ln)))

    def _ws_send(self, op, data):
        hdr = bytes([0x80 | op])
        if len(data) < 126:
            hdr += bytes([len(data)])
        elif len(data) < 65536:
            hdr += b"\x7e" + len(data).to_bytes(2, "big")
        else:
            hdr += b"\x7f" + len(data).to_bytes(8, "big")
        self.wfile.write(hdr + data)
        self.wfile.flush()

    def _responses_websocket(self):
        """The Responses API over a WebSocket (what Codex tries first): each response.create
        text frame is answered with the response's events as text frames."""
        for op, data in self._ws_messages():
            if op != 1:
                continue
            try:
                req = json.loads(data)
            except ValueError:
                req = {}
            if not isinstance(req, dict):
                req = {}
            text = answer_text(data) or "capsem-answer-none"
            for _, ev in responses_events(str(req.get("model", "gpt")), text):
                self._ws_send(1, json.dumps(ev).encode())

    def _websocket(self):
        """/ws: a WebSocket echo ("echo: " + each text or binary message)."""
        for op, data in self._ws_messages():
            if op in (1, 2):
                self._ws_send(op, b"echo: " + data)

    def _ws_messages(self):
        """Accept the upgrade, then yield each (opcode, payload) of the client's data frames; a
        ping is answered with its pong, a close with a close, which ends the session."""
        self._ws_accept()
        while True:
            f = self._ws_read()
            if f is None:
                return
            op, data = f
            if op == 8:
                self._ws_send(8, b"")
                return
            if op == 9:
                self._ws_send(10, data)
                continue
            yield op, data

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
        self.git_root = os.path.join(d, "git")
        self.https.git_root = self.http.git_root = self.git_root
        for s in (self.https, self.http):
            threading.Thread(target=s.serve_forever, daemon=True).start()

    def git_repo(self, owner, name, files=None):
        """A bare repository served as https://github.com/OWNER/NAME.git, with one commit of
        files ({path: text}); returns its directory."""
        bare = os.path.join(self.git_root, owner, name + ".git")
        work = bare + ".work"
        env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", HOME=self.git_root,
                   GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
                   GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
        run = lambda *a: subprocess.run(a, check=True, capture_output=True, env=env)
        os.makedirs(work)
        run("git", "init", "-q", "-b", "main", work)
        for path, text in (files or {"README.md": f"{owner}/{name}\n"}).items():
            with open(os.path.join(work, path), "w") as f:
                f.write(text)
        run("git", "-C", work, "add", "-A")
        run("git", "-C", work, "commit", "-q", "-m", "first")
        run("git", "clone", "-q", "--bare", work, bare)
        run("git", "-C", bare, "config", "http.receivepack", "true")
        return bare

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
