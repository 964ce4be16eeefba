#!/usr/bin/env python3
"""A stdio MCP server for tests: newline-delimited JSON-RPC on stdin/stdout (common.py tools).
Requests are handled one at a time, in a thread each so that `slow` does not block the others.
With --pidfile FILE it appends its pid there (tests check restarts and leftovers); with --log
FILE it appends the method of every message it receives (tests check cancellations)."""
import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

lock = threading.Lock()


def reply(r):
    with lock:
        sys.stdout.write(json.dumps(r) + "\n")
        sys.stdout.flush()


def work(msg):
    r = common.handle(msg)
    if r is not None:
        reply(r)


def main():
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    if "--pidfile" in args:
        with open(args["--pidfile"], "a") as f:
            f.write(f"{os.getpid()}\n")
    log = args.get("--log")
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if log:
            with open(log, "a") as f:
                f.write(f"{msg.get('method', 'response')}\n")
        if msg.get("method") == "tools/call" and \
                (msg.get("params") or {}).get("name") in ("slow",):
            threading.Thread(target=work, args=(msg,), daemon=True).start()
        else:
            work(msg)


if __name__ == "__main__":
    main()
