#!/bin/sh
# dev.sh - the two entry points of a fresh checkout (see README.md):
#   ./dev.sh run    install dependencies, build everything (host, guest, kernel, image),
#                   then run a demo command in a microVM
#   ./dev.sh test   install dependencies, build everything, run the whole test suite
# Anything else is passed to make (./dev.sh bench, ./dev.sh build, ...).
set -eu
cd "$(dirname "$0")"
scripts/install-deps.sh
case "${1:-run}" in
run) exec make demo ;;
test) exec make test ;;
*) exec make "$@" ;;
esac
