#!/bin/sh
# install-deps.sh: install the Debian/Ubuntu packages Capsem needs to build, run and test.
# Idempotent: apt runs only when something is missing. Uses sudo when not root.
# The web UI is built with npm (its packages from the npm registry, pinned by ui/package-lock.json);
# its tests drive Debian's chromium through playwright-core.
#   --bench  also the benchmark tools (nginx-light, wrk, mitmproxy: bench/bench_proxy.py)
set -eu
PKGS="make gcc clang libclang-rt-14-dev clang-format clang-tidy-19 meson ninja-build pkg-config
 qemu-system-x86 linux-source-6.1 bc bison flex libelf-dev libssl-dev
 musl-tools busybox-static cpio zstd
 libuv1-dev libjansson-dev libcmocka-dev zlib1g-dev
 python3 python3-pytest e2fsprogs tmux
 golang-github-burntsushi-toml-dev
 golang-go golang-github-containerd-containerd-dev containerd
 mmdebstrap uidmap squashfs-tools erofs-utils
 libsqlite3-dev nftables openssl curl libcurl4-openssl-dev
 dpkg-dev lintian man-db chromium fonts-dejavu-core"
[ "${1:-}" = --bench ] && PKGS="$PKGS nginx-light wrk mitmproxy"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# npm (the rootfs build fetches Node.js from the npm registry): Debian's package, unless an npm
# is already installed (a Node.js from elsewhere ships its own and conflicts with Debian's)
command -v npm >/dev/null 2>&1 || missing="$missing npm"
[ -z "$missing" ] && exit 0
echo "install-deps: installing:$missing" >&2
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >&2
