"""Tools shared by the test MCP servers (stdio_server.py, http_server.py): echo, add, slow,
crash, big. Python 3 standard library only."""
import os
import time

PROTOCOL = "2025-06-18"

TOOLS = [
    {"name": "echo", "description": "Return the text given.",
     "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}},
                     "required": ["text"]}},
    {"name": "add", "description": "Add two integers.",
     "inputSchema": {"type": "object", "properties": {"a": {"type": "integer"},
                                                      "b": {"type": "integer"}},
                     "required": ["a", "b"]}},
    {"name": "slow", "description": "Sleep for the given seconds, then answer.",
     "inputSchema": {"type": "object", "properties": {"seconds": {"type": "number"}}}},
    {"name": "crash", "description": "Exit the server process at once.",
     "inputSchema": {"type": "object", "properties": {}}},
    {"name": "big", "description": "Return n bytes of text.",
     "inputSchema": {"type": "object", "properties": {"n": {"type": "integer"}}}},
]


def text(t, is_error=False):
    return {"content": [{"type": "text", "text": t}], "isError": is_error}


def handle(msg, on_crash=None):
    """The response (a dict) to one request, or None for a notification."""
    method = msg.get("method")
    mid = msg.get("id")
    if "id" not in msg:
        return None
    if method == "initialize":
        res = {"protocolVersion": PROTOCOL, "capabilities": {"tools": {"listChanged": True}},
               "serverInfo": {"name": "capsem-test-mcp", "version": "1"}}
    elif method == "ping":
        res = {}
    elif method == "tools/list":
        res = {"tools": TOOLS}
    elif method == "tools/call":
        p = msg.get("params") or {}
        name, args = p.get("name"), p.get("arguments") or {}
        if name == "echo":
            res = text(str(args.get("text", "")))
        elif name == "add":
            res = text(str(int(args["a"]) + int(args["b"])))
        elif name == "slow":
            time.sleep(float(args.get("seconds", 1)))
            res = text("slept")
        elif name == "crash":
            if on_crash:
                on_crash()
            os._exit(3)
        elif name == "big":
            res = text("x" * int(args.get("n", 1000)))
        else:
            return {"jsonrpc": "2.0", "id": mid,
                    "error": {"code": -32602, "message": f"unknown tool {name}"}}
    else:
        return {"jsonrpc": "2.0", "id": mid,
                "error": {"code": -32601, "message": "method not found"}}
    return {"jsonrpc": "2.0", "id": mid, "result": res}
