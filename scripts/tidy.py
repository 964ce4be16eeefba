#!/usr/bin/python3
"""tidy.py [--all] [BUILDDIR] - clang-tidy (the checks of .clang-tidy) over every .c under src/.

Each file is checked with its command from BUILDDIR/compile_commands.json (default build/; the
host build compiles the guest sources too, as capsem-agent-host). Any finding fails the run:
the tree stays at zero. A file that passed is remembered in BUILDDIR/tidy-cache/ under a key of
clang-tidy's version, .clang-tidy, its compile command and the contents of the file and of every
header its last build read (ninja's deps log), so a run after a small change checks only
the files that change reaches; --all ignores the cache. Exit status 0 when clean, 1 otherwise.
"""
import concurrent.futures
import hashlib
import json
import os
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIDY = os.environ.get("CLANG_TIDY", "clang-tidy-19")


def build_deps(builddir):
    """{output: [files its last compile read]}, from ninja's deps log (ninja -t deps)."""
    p = subprocess.run(["ninja", "-C", builddir, "-t", "deps"], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True)
    deps, cur = {}, None
    for line in p.stdout.splitlines():
        if not line.strip():
            cur = None
        elif not line.startswith(" "):
            out, _, state = line.partition(": #deps")
            cur = deps.setdefault(out, []) if "(VALID)" in state else None
        elif cur is not None:
            cur.append(os.path.normpath(os.path.join(builddir, line.strip())))
    return deps


def cache_key(entry, deps, common, hashes):
    paths = deps.get(entry.get("output"))
    if not paths:
        return None
    h = hashlib.sha256(common)
    h.update(entry.get("command", " ".join(entry.get("arguments", []))).encode())
    for p in paths:
        if p not in hashes:
            try:
                with open(p, "rb") as f:
                    hashes[p] = hashlib.sha256(f.read()).hexdigest()
            except OSError:
                return None
        h.update(p.encode() + b"\0" + hashes[p].encode())
    return h.hexdigest()


def run(builddir, path):
    p = subprocess.run([TIDY, "-p", builddir, "--quiet", "--warnings-as-errors=*", path],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = "\n".join(l for l in p.stdout.splitlines() if not l.endswith(" warnings generated.")
                    and not l.endswith(" warning generated.") and "error generated" not in l
                    and "errors generated" not in l and "warnings treated as errors" not in l)
    return p.returncode, out.strip()


def main():
    args = [a for a in sys.argv[1:] if a != "--all"]
    use_cache = "--all" not in sys.argv[1:]
    builddir = os.path.abspath(args[0] if args else os.path.join(ROOT, "build"))
    os.chdir(ROOT)
    with open(os.path.join(builddir, "compile_commands.json")) as f:
        db = json.load(f)
    entries = {}
    for e in db:
        rel = os.path.relpath(os.path.normpath(os.path.join(e["directory"], e["file"])), ROOT)
        entries.setdefault(rel, e)
    files = subprocess.run(["git", "ls-files", "src/*.c"], stdout=subprocess.PIPE, text=True,
                           check=True).stdout.split()
    missing = [f for f in files if f not in entries]
    if missing:
        print("tidy: not in the compile database: " + " ".join(missing), file=sys.stderr)
        return 1
    version = subprocess.run([TIDY, "--version"], stdout=subprocess.PIPE, text=True,
                             check=True).stdout
    with open(".clang-tidy", "rb") as f:
        common = version.encode() + f.read()
    cachedir = os.path.join(builddir, "tidy-cache")
    os.makedirs(cachedir, exist_ok=True)
    deps = build_deps(builddir) if use_cache else {}
    hashes, todo = {}, []
    for f in files:
        key = cache_key(entries[f], deps, common, hashes) if use_cache else None
        stamp = os.path.join(cachedir, f.replace("/", "__") + ".ok")
        if key:
            try:
                with open(stamp) as s:
                    if s.read() == key:
                        continue
            except OSError:
                pass
        todo.append((f, stamp, key))
    print(f"tidy: {len(files)} files, {len(todo)} to check ({TIDY})", flush=True)
    bad = 0
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        futs = {pool.submit(run, builddir, f): (f, stamp, key) for f, stamp, key in todo}
        for fut in concurrent.futures.as_completed(futs):
            f, stamp, key = futs[fut]
            rc, out = fut.result()
            if rc != 0 or "warning:" in out or "error:" in out:
                bad += 1
                print(out or f"{f}: {TIDY} exited with {rc}", flush=True)
                if os.path.exists(stamp):
                    os.unlink(stamp)
            elif key:
                with open(stamp, "w") as s:
                    s.write(key)
    if bad:
        print(f"tidy: findings in {bad} file(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
