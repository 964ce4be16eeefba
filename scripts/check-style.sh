#!/bin/sh
# check-style.sh format|banned: the two source checks CI runs.
#   format  every .c/.h under src/ and tests/ matches .clang-format (kernel style)
#   banned  no banned libc calls (STYLE.md): unsafe string functions, atoi, alloca, system,
#           popen, signal (use sigaction), sscanf and strtol* (use parse.h), and friends
set -eu
cd "$(dirname "$0")/.."
files=$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c' 'tests/*.h' 2>/dev/null || find src tests -name '*.[ch]')
case "${1:-}" in
format)
	clang-format --dry-run -Werror $files
	;;
banned)
	pat='\b(strcpy|strcat|sprintf|vsprintf|strtok|gets|atoi|atol|atoll|alloca|system|popen|signal|strncpy|strncat|tmpnam|mktemp|rand|sscanf|vsscanf|strtol|strtoll|strtoul|strtoull)[[:space:]]*\('
	if grep -nE "$pat" $files | grep -vE '^[^:]+:[0-9]+:[[:space:]]*(/\*|\*)'; then
		echo "check-style: banned functions used (see STYLE.md)" >&2
		exit 1
	fi
	;;
*)
	echo "usage: $0 format|banned" >&2
	exit 2
	;;
esac
