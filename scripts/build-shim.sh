#!/bin/sh
# build-shim.sh BUILD_DIR [--test | --package HELPER_DIR]: build containerd-shim-capsem-v2 and its
# guest helper capsem-ctr-init (Go, src/shim) into BUILD_DIR/src/shim with Debian's Go and
# Debian's containerd shim library (/usr/share/gocode: GOPATH mode, no module download). Both
# binaries are static (CGO_ENABLED=0): the helper runs inside the guest, which has no libc of
# ours. Reproducible: -trimpath, an empty build id, no VCS stamp, so two builds of one tree in
# different directories give the same bytes.
#   (no option)  skips with a message, successfully, when Go or the library is missing
#                (scripts/install-deps.sh installs both): `make build`
#   --test       also gofmt, go vet and go test (make check)
#   --package D  the Debian package's build (scripts/mkdeb.py): fails when Go or the library is
#                missing, strips the symbol tables (-s -w), and links in D as the directory
#                where the shim finds capsem-ctr-init when it is not beside it (/usr/libexec/capsem)
set -eu
out="$(realpath -m "${1:-build}")/src/shim"
src="$(cd "$(dirname "$0")/.." && pwd)/src/shim"
mode="${2:-}"
gocode=/usr/share/gocode
if ! command -v go >/dev/null 2>&1 || [ ! -d "$gocode/src/github.com/containerd/containerd/runtime/v2/shim" ]; then
	echo "build-shim: Go or golang-github-containerd-containerd-dev missing: containerd-shim-capsem-v2 not built (scripts/install-deps.sh)" >&2
	[ "$mode" = --package ] && exit 1
	exit 0
fi
ldflags="-buildid="
if [ "$mode" = --package ]; then
	[ -n "${3:-}" ] || { echo "build-shim: --package needs the helper's directory" >&2; exit 2; }
	ldflags="-s -w -buildid= -X main.helperDir=$3"
fi
mkdir -p "$out" "$out/gopath/src/capsem.dev"
ln -sfn "$src" "$out/gopath/src/capsem.dev/shim"
export GOPATH="$out/gopath:$gocode" GO111MODULE=off CGO_ENABLED=0 GOCACHE="$out/go-cache" \
	GOFLAGS="-trimpath -buildvcs=false"
cd "$out/gopath/src/capsem.dev/shim"
go build -ldflags="$ldflags" -o "$out/containerd-shim-capsem-v2" .
go build -ldflags="$ldflags" -o "$out/capsem-ctr-init" ./ctrinit
if [ "$mode" = --test ]; then
	# the Go side of `make check`: formatting, vet and the unit tests of src/shim
	unformatted=$(gofmt -l "$src")
	[ -z "$unformatted" ] || { echo "build-shim: not gofmt'ed: $unformatted" >&2; exit 1; }
	go vet . ./ctrinit
	go test . ./ctrinit
fi
