#!/bin/sh
# gen-musl-cross.sh OUTDIR: write OUTDIR/musl-cross.ini, a meson cross file for the static musl
# guest build. Debian's musl-gcc keeps the kernel UAPI headers out of its include path, and adding
# glibc's include directories breaks the build, so OUTDIR/uapi holds only links named linux, asm
# and asm-generic to the system's kernel headers, added with -idirafter.
set -eu
out=$1
mkdir -p "$out/uapi"
multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
ln -sfn /usr/include/linux "$out/uapi/linux"
ln -sfn "/usr/include/$multiarch/asm" "$out/uapi/asm"
ln -sfn /usr/include/asm-generic "$out/uapi/asm-generic"
cat > "$out/musl-cross.ini" <<INI
[binaries]
c = 'musl-gcc'
ar = 'ar'
strip = 'strip'

[built-in options]
c_args = ['-idirafter', '$(cd "$out" && pwd)/uapi']
c_link_args = ['-static']
default_library = 'static'
b_pie = false

[host_machine]
system = 'linux'
cpu_family = 'x86_64'
cpu = 'x86_64'
endian = 'little'
INI
