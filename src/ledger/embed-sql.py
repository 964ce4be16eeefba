#!/usr/bin/env python3
"""embed-sql.py IN OUT NAME: write a C file defining `const char NAME[]` with IN's text.

Used by src/ledger/meson.build to compile schema.sql into the ledger library. Every byte that is
not printable ASCII is written as an octal escape, so the output is plain C whatever IN holds."""
import sys


def main():
    src, out, name = sys.argv[1:4]
    data = open(src, "rb").read()
    lines = [f"/* generated from {src.rsplit('/', 1)[-1]} by embed-sql.py: do not edit */",
             f"extern const char {name}[];", f"const char {name}[] ="]
    for line in data.splitlines(keepends=True):
        s = ""
        for b in line:
            c = chr(b)
            if c in "\\\"":
                s += "\\" + c
            elif c == "\n":
                s += "\\n"
            elif c == "\t":
                s += "\\t"
            elif 32 <= b < 127:
                s += c
            else:
                s += "\\%03o" % b
        lines.append(f'\t"{s}"')
    lines[-1] += ";"
    if not data:
        lines.append('\t"";')
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
