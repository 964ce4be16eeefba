#!/usr/bin/python3
"""gen-man.py - man pages from the programs' own --help text (one source for both).

    gen-man.py OUTDIR BINDIR VERSION

Runs BINDIR/capsem --help to learn the command list, then `capsem CMD --help` for each command,
`capsemd --help`, `capsem-mcp --help`, `capsem-builder --help` and `capsem-builder CMD --help`,
and writes OUTDIR/<page>.1 (capsem.1, capsem-run.1, ..., capsem-builder-image.1). The help
texts share one layout, which is all this relies on:

    Usage: PROG ...            (continuation lines indented under it)
    paragraph text
    Heading:                   (a line ending in ':', not indented)
      -x, --opt ARG  text      (an entry: indented, two or more spaces before its text;
                     more text  deeper-indented lines continue it)

Anything else is kept as text. The date is $SOURCE_DATE_EPOCH's (reproducible builds). Used by
scripts/mkdeb.py; tests/e2e/test_packaging.py renders every page with `man -l`.
"""
import datetime
import os
import re
import subprocess
import sys

ENTRY = re.compile(r"^ {1,8}(\S.*?)(?: {2,}|\t)(\S.*)$")
TERM_ONLY = re.compile(r"^ {1,8}(-\S.*|[a-z][\w|-]*(?: [A-Z].*)?)$")


def esc(s):
    s = s.replace("\\", "\\e").replace("-", "\\-")
    return s


def line(s):
    """A text line: a leading '.' or "'" would be a request."""
    s = esc(s)
    return "\\&" + s if s[:1] in (".", "'") else s


def help_text(argv):
    r = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, LC_ALL="C"))
    out = r.stdout if r.stdout.strip() else r.stderr
    if not out.strip():
        sys.exit(f"gen-man: {' '.join(argv)} printed no help")
    return out.rstrip("\n").split("\n")


def to_roff(lines, page, summary, version, date, see_also):
    out = [f'.TH "{page.upper()}" "1" "{date}" "capsem {version}" "Capsem manual"',
           ".SH NAME", f"{esc(page)} \\- {esc(summary)}", ".SH SYNOPSIS", ".nf"]
    i = 0
    while i < len(lines) and (lines[i].startswith("Usage:") or
                              (i > 0 and lines[i].startswith("   ") and lines[i].strip())):
        u = lines[i][len("Usage:"):] if lines[i].startswith("Usage:") else lines[i]
        out.append(line(u.strip()))
        i += 1
    out += [".fi", ".SH DESCRIPTION"]
    para = False  # inside running text
    in_entry = False
    entry_indent = 0
    for raw in lines[i:]:
        s = raw.rstrip()
        if not s:
            if para or in_entry:
                out.append(".PP")
            para = in_entry = False
            continue
        lead = len(s) - len(s.lstrip(" "))
        if lead == 0 and s.endswith(":") and len(s) < 60:
            out.append(f".SS {esc(s[:-1])}")
            para = in_entry = False
            continue
        new_entry = lead <= 8 and (s.lstrip().startswith("-") or not in_entry or
                                   lead <= entry_indent)
        if in_entry and lead > entry_indent and not new_entry:
            out.append(line(s.strip()))
            continue
        m = ENTRY.match(s)
        if m and new_entry:
            out += [".TP", f"\\fB{esc(m.group(1).strip())}\\fR", line(m.group(2).strip())]
            in_entry, entry_indent, para = True, lead, False
            continue
        m = TERM_ONLY.match(s)
        if m and new_entry and lead >= 1:
            out += [".TP", f"\\fB{esc(m.group(1).strip())}\\fR"]
            in_entry, entry_indent, para = True, lead, False
            continue
        if in_entry:
            out.append(".PP")
            in_entry = False
        if lead:
            out += [".nf", line(s), ".fi"]
            continue
        out.append(line(s))
        para = True
    if see_also:
        out += [".SH SEE ALSO", ",\n".join(f"\\fB{esc(p)}\\fR(1)" for p in see_also)]
    return "\n".join(out) + "\n"


def commands(main_help):
    """(name, summary) of each command listed under 'Commands:' of a --help text."""
    res, on = [], False
    for s in main_help:
        if s.startswith("Commands:"):
            on = True
            continue
        if on:
            if not s.strip():
                break
            m = ENTRY.match(s)
            if m:
                res.append((m.group(1).split()[0], m.group(2).strip()))
    return res


def main():
    outdir, bindir, version = sys.argv[1:4]
    os.makedirs(outdir, exist_ok=True)
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0")) or None
    when = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc) if epoch else \
        datetime.datetime.now(datetime.timezone.utc)
    date = when.strftime("%Y-%m-%d")
    capsem = os.path.join(bindir, "capsem")
    builder = os.path.join(bindir, "capsem-builder")
    main_help = help_text([capsem, "--help"])
    cmds = [(c, s) for c, s in commands(main_help) if c != "help"]
    bcmds = [(c, s) for c, s in commands(help_text([builder, "--help"])) if c != "version"]
    pages = {}
    top = ["capsem", "capsemd", "capsem-mcp", "capsem-builder"]
    pages["capsem"] = (main_help, "run commands and AI agents in sandboxed microVMs",
                       ["capsem-" + c for c, _ in cmds] + top[1:])
    for c, s in cmds:
        pages["capsem-" + c] = (help_text([capsem, c, "--help"]), s, ["capsem"])
    pages["capsemd"] = (help_text([os.path.join(bindir, "capsemd"), "--help"]),
                        "the Capsem daemon, owner of the sandbox microVMs", ["capsem"])
    pages["capsem-mcp"] = (help_text([os.path.join(bindir, "capsem-mcp"), "--help"]),
                           "Capsem as an MCP server for AI agents on the host", ["capsem"])
    pages["capsem-builder"] = (help_text([builder, "--help"]),
                               "build Capsem's guest kernel, initramfs and images",
                               ["capsem-builder-" + c for c, _ in bcmds] + ["capsem"])
    for c, s in bcmds:
        pages["capsem-builder-" + c] = (help_text([builder, c, "--help"]), s,
                                        ["capsem-builder"])
    for page, (text, summary, see) in sorted(pages.items()):
        with open(os.path.join(outdir, page + ".1"), "w") as f:
            f.write(to_roff(text, page, summary, version, date, see))
    print(f"gen-man: {len(pages)} pages in {outdir}")


if __name__ == "__main__":
    main()
