# Capsem - thin wrapper over meson/ninja and the asset builder. See README.md.
#   make build   host binaries (build/), static musl guest binaries (build-guest/) and the web UI
#                (ui/, built with npm from its lockfile into build/ui/dist, served by capsem-gateway)
#   make image   guest kernel + minimal initramfs, cached in ~/.cache/capsem, installed as the
#                'minimal' image in $CAPSEM_HOME/images (default ~/.capsem/images)
#   make image-debian  the same kernel + initramfs with the Debian root of guest/config (python3,
#                node, git, the Claude Code, Gemini and Codex CLIs; needs root; cached by layer)
#   make demo    build + images, then run commands in microVMs (egress blocked by default)
#   make check   style, clang-tidy (zero findings), unit, fuzz-corpus replay, the same under
#                ASan/UBSan, threads under TSan: no images, no VMs (about 30 s once built)
#   make tidy    clang-tidy (.clang-tidy) over every .c under src/, through build/'s compile
#                database; files unchanged since they last passed are skipped (build/tidy-cache)
#   make test    everything: make check, then end-to-end tests with real VMs
#   make bench   benchmarks; JSON results under bench/results/
#   make fuzz    build the libFuzzer targets (clang) into build-fuzz/
#   make deb     dist/capsem_<version>_amd64.deb (scripts/mkdeb.py: build-deb/, build-deb-guest/;
#                reproducible: SOURCE_DATE_EPOCH is the commit's time)

JOBS ?= $(shell nproc)
PY := /usr/bin/python3
GUEST_BIN := build-guest/src/guest/capsem-guest
BUILDER := build/src/builder/capsem-builder

UI_SRC := $(wildcard ui/src/*.* ui/src/lib/*.* ui/index.html ui/vite.config.js ui/package-lock.json)

.PHONY: all build host guest ui shim image image-debian demo check tidy test unit asan style e2e bench fuzz clean deb

all: build

build: host guest ui shim

# containerd-shim-capsem-v2 and capsem-ctr-init (Go; skipped with a message without Go)
shim: host
	scripts/build-shim.sh build

# the web UI: npm ci (the lockfile's exact versions) when node_modules is older than the lockfile,
# then vite build into build/ui/dist (capsem-gateway finds it next to its binary)
ui: build/ui/dist/index.html
build/ui/dist/index.html: $(UI_SRC)
	@[ ui/node_modules/.package-lock.json -nt ui/package-lock.json ] || (cd ui && npm ci --no-audit --no-fund)
	cd ui && CAPSEM_UI_OUT=../build/ui/dist npx vite build --logLevel warn

host:
	@[ -f build/build.ninja ] || meson setup build
	ninja -C build -j$(JOBS)
	@mkdir -p bin && ln -sfn ../build/src/cli/capsem bin/capsem && \
		ln -sfn ../build/src/vm/capsem-vm bin/capsem-vm && \
		ln -sfn ../build/src/builder/capsem-builder bin/capsem-builder && \
		ln -sfn ../build/src/mcp/capsem-mcp bin/capsem-mcp && \
		ln -sfn ../build/src/webgw/capsem-gateway bin/capsem-gateway

guest:
	@[ -f build-guest/build.ninja ] || { scripts/gen-musl-cross.sh build-guest-cross && \
		meson setup build-guest --cross-file build-guest-cross/musl-cross.ini -Drole=guest; }
	ninja -C build-guest -j$(JOBS)

image: build
	$(BUILDER) image --name minimal --guest-bin $(GUEST_BIN) --jobs $(JOBS)

# the Debian image of guest/config (capsem-builder validate/plan/inspect): kernel + initramfs +
# the root file system built with mmdebstrap and npm (needs root and the network; each layer is
# cached by content hash, so only what changed is rebuilt)
image-debian: build
	$(BUILDER) image --rootfs --config guest/config --guest-bin $(GUEST_BIN) --jobs $(JOBS)

demo: image image-debian
	@echo '$$ capsem run -- uname -a'
	@bin/capsem run -v -- uname -a
	@echo '$$ capsem run -- sh -c '"'"'echo out; echo err >&2; exit 7'"'"
	@bin/capsem run -- sh -c 'echo out; echo err >&2; exit 7' || echo "(exit status $$?)"
	@echo '$$ echo hello | capsem run -- cat'
	@echo hello | bin/capsem run -- cat
	@echo '$$ capsem run --timeout 2 -- sleep 60'
	@bin/capsem run --timeout 2 -- sleep 60 || echo "(exit status $$?)"
	@echo '$$ capsem run -- python3 -c "import urllib.request as u; u.urlopen(\"https://example.com\")"'
	@bin/capsem run -- python3 -c 'import urllib.request as u; u.urlopen("https://example.com")' 2>&1 | tail -1 || true
	@echo '$$ capsem policy check https://example.com/'
	@bin/capsem policy check https://example.com/ || true

check: host
	$(PY) scripts/run-tests.py --check

tidy: host
	$(PY) scripts/tidy.py

test: image image-debian
	$(PY) scripts/run-tests.py

bench: image image-debian
	scripts/install-deps.sh --bench
	$(PY) bench/bench_proxy.py
	$(PY) bench/bench_vm.py
	$(PY) bench/bench_daemon.py
	$(PY) bench/bench_image.py
	$(PY) bench/bench_workspace.py
	$(PY) bench/bench_fork.py
	$(PY) bench/bench_suspend.py
	$(PY) bench/bench_containerd.py
	$(PY) bench/bench_snapshots.py
	$(PY) bench/bench_webgw.py
	$(PY) bench/bench_dashboard.py

deb:
	$(PY) scripts/mkdeb.py

fuzz:
	@[ -f build-fuzz/build.ninja ] || CC=clang meson setup build-fuzz -Dfuzz=true
	ninja -C build-fuzz -j$(JOBS)

clean:
	rm -rf build build-guest build-guest-cross build-asan build-tsan build-fuzz bin \
		build-deb build-deb-guest build-deb-guest-cross dist
