#!/bin/sh
# build-shim.sh BUILD_DIR [--test]: build containerd-shim-capsem-v2 and its guest helper capsem-ctr-init
# (Go, src/shim) into BUILD_DIR/src/shim with Debian's Go and Debian's containerd shim library
# (/usr/share/gocode: GOPATH mode, no module download). Skips with a message, successfully, when
# Go or the library is missing (scripts/install-deps.sh installs both). Both binaries are
# static (CGO_ENABLED=0): the helper runs inside the guest, which has no libc of ours.
# --test: also gofmt, go vet and go test (make check).
set -eu
out="$(realpath -m "${1:-build}")/src/shim"
src="$(cd "$(dirname "$0")/.." && pwd)/src/shim"
gocode=/usr/share/gocode
if ! command -v go >/dev/null 2>&1 || [ ! -d "$gocode/src/github.com/containerd/containerd/runtime/v2/shim" ]; then
	echo "build-shim: Go or golang-github-containerd-containerd-dev missing: containerd-shim-capsem-v2 not built (scripts/install-deps.sh)" >&2
	exit 0
fi
mkdir -p "$out" "$out/gopath/src/capsem.dev"
ln -sfn "$src" "$out/gopath/src/capsem.dev/shim"
export GOPATH="$out/gopath:$gocode" GO111MODULE=off CGO_ENABLED=0 GOCACHE="$out/go-cache" GOFLAGS=-trimpath
cd "$out/gopath/src/capsem.dev/shim"
go build -o "$out/containerd-shim-capsem-v2" .
go build -o "$out/capsem-ctr-init" ./ctrinit
if [ "${2:-}" = --test ]; then
	# the Go side of `make check`: formatting, vet and the unit tests of src/shim
	unformatted=$(gofmt -l "$src")
	[ -z "$unformatted" ] || { echo "build-shim: not gofmt'ed: $unformatted" >&2; exit 1; }
	go vet . ./ctrinit
	go test . ./ctrinit
fi
