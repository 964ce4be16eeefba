"""mcpsdk.py - the official MCP TypeScript SDK (@modelcontextprotocol/sdk) for the tests: a real
MCP client, from the npm registry, run by node.

    from mcpsdk import sdk_dir, run_client, CLIENT

    sdk_dir() -> str
        Installs the pinned SDK once into ~/.cache/capsem/npm-mcp-sdk-<version> (outside the
        checkout; concurrency-safe: npm installs into a temporary directory that is renamed into
        place, and a process that loses the race uses the winner's copy) and returns that
        directory's node_modules path. Raises RuntimeError when npm fails.

    run_client(script_path, args=(), env=None, timeout=300, input=None) -> CompletedProcess
        Runs `node script_path *args` with NODE_PATH set to sdk_dir() (plus env on top of
        os.environ), text mode, stdout/stderr captured. An ES module script cannot use NODE_PATH,
        so scripts import the SDK through a path: tests/e2e/mcp/client.mjs reads
        process.env.MCP_SDK_DIR, which run_client also sets (the node_modules path).

    CLIENT: tests/e2e/mcp/client.mjs, a generic client: connects with StdioClientTransport to a
        command and runs a list of steps (see its header), printing one JSON result per step.

The SDK version is pinned (SDK_VERSION); its dependencies resolve at install time. The host's
node (Debian 12: 18; NodeSource: 20) runs it; the SDK's client needs node >= 18.
"""
import json
import os
import shutil
import subprocess
import tempfile

SDK_PACKAGE = "@modelcontextprotocol/sdk"
SDK_VERSION = "1.32.2"
HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.join(HERE, "mcp", "client.mjs")


def cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "capsem", f"npm-mcp-sdk-{SDK_VERSION}")


def _installed(d):
    pkg = os.path.join(d, "node_modules", *SDK_PACKAGE.split("/"), "package.json")
    try:
        with open(pkg) as f:
            return json.load(f).get("version") == SDK_VERSION
    except (OSError, ValueError):
        return False


def sdk_dir():
    """The node_modules directory holding the pinned SDK (installed on first use)."""
    d = cache_dir()
    if _installed(d):
        return os.path.join(d, "node_modules")
    parent = os.path.dirname(d)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(d) + ".tmp-", dir=parent)
    try:
        p = subprocess.run(
            ["npm", "install", "--prefix", tmp, "--no-audit", "--no-fund", "--no-save",
             "--loglevel=error", f"{SDK_PACKAGE}@{SDK_VERSION}"],
            capture_output=True, text=True, timeout=600)
        if p.returncode != 0 or not _installed(tmp):
            raise RuntimeError(f"npm install {SDK_PACKAGE}@{SDK_VERSION} failed "
                               f"(exit {p.returncode}): {p.stderr[-2000:]}")
        if os.path.exists(d) and not _installed(d):
            shutil.rmtree(d, ignore_errors=True)  # a broken copy (an interrupted install)
        try:
            os.rename(tmp, d)
        except OSError:
            # another process installed it first: use theirs
            if not _installed(d):
                raise
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(d, "node_modules")


def run_client(script_path, args=(), env=None, timeout=300, input=None):
    """node script_path *args with the SDK reachable (NODE_PATH and MCP_SDK_DIR)."""
    mods = sdk_dir()
    e = dict(os.environ)
    if env:
        e.update(env)
    e["NODE_PATH"] = mods
    e["MCP_SDK_DIR"] = mods
    return subprocess.run(["node", script_path, *args], capture_output=True, text=True,
                          env=e, timeout=timeout, input=input)


if __name__ == "__main__":
    print(sdk_dir())
