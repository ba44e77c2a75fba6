#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for a while.
#
#   tests/fuzz/run.sh [seconds per target] [target ...]    (default: 60, all)
#   FUZZ_RUNS=10000000 tests/fuzz/run.sh 7200 imap         (stop at N executions)
#   FUZZ_TIMEOUT=30 ...        (seconds one input may take; default 10, raise on a loaded machine)
#
# Binaries, corpora and crash artifacts go to $FUZZ_OUT (default
# build-fuzz/). scripts/test.sh runs every target for 5 s. A crash stops
# the script with libFuzzer's report; rerun one input with
# build-fuzz/fuzz_<target> <crash file>.
set -euo pipefail
cd "$(dirname "$0")/../.."

secs=${1:-60}
shift || true
targets=("$@")
all=(toml config sasl identifier proxy_protocol k8s_event kubeconfig http mapfile
	imap pop3 sieve submission store_answer fleet_event http_response
	redis_reply pg_result proxy_stage fleet_dedup redis_conn pg_conn)
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
out=${FUZZ_OUT:-build-fuzz}
mkdir -p "$out"

# shellcheck disable=SC2054 # the commas are in -fsanitize lists
cflags=(-std=c11 -D_GNU_SOURCE -DSWITCHYARD_VERSION='"fuzz"' -g -O1
        -fsanitize=address,undefined -fno-sanitize-recover=undefined -Iinclude)
deps=(libuv openssl jansson hiredis libpq libcurl yaml-0.1)
read -r -a pc_cflags <<<"$(pkg-config --cflags "${deps[@]}")"
read -r -a pc_libs <<<"$(pkg-config --libs "${deps[@]}")"

# Every source under src/*/ (all but main.c), compiled once with the fuzzer's coverage
# instrumentation into one archive: each target links only the objects it
# needs (so the protocol targets' test session, which defines the ictx_*
# functions itself, never meets src/proto/interactive.c).
lib=$out/libswitchyard-fuzz.a
build_lib() {
	local newest src obj stale=()
	newest=$(find include src -name '*.h' -printf '%T@\n' | sort -n | tail -1)
	mkdir -p "$out/obj"
	for src in src/*/*.c; do
		obj=$out/obj/$(echo "$src" | tr / _ | sed 's/\.c$/.o/')
		if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] ||
			[ "$(stat -c %Y "$obj")" -lt "${newest%.*}" ]; then
			stale+=("$src")
		fi
	done
	if [ ${#stale[@]} -gt 0 ]; then
		echo "== library: compiling ${#stale[@]} sources"
		# shellcheck disable=SC2016 # expanded by the inner sh
		printf '%s\n' "${stale[@]}" | xargs -P "$(nproc)" -I{} sh -c \
			'o="$1/obj/$(echo "$2" | tr / _ | sed "s/\.c\$/.o/")"; shift 2; exec clang "$@" -c "$0" -o "$o"' \
			{} "$out" {} "${cflags[@]}" -fsanitize=fuzzer-no-link "${pc_cflags[@]}"
		rm -f "$lib"
	fi
	[ -f "$lib" ] || ar rcs "$lib" "$out"/obj/*.o
}

build() {
	local t=$1
	case " ${all[*]} " in *" $t "*) ;; *) echo "unknown target $t" >&2; exit 2 ;; esac
	clang "${cflags[@]}" -fsanitize=fuzzer "${pc_cflags[@]}" "tests/fuzz/fuzz_$t.c" "$lib" \
		-o "$out/fuzz_$t" "${pc_libs[@]}" -lhttp_parser -lm -lpthread
}

seed() {
	local t=$1 dir
	dir=$out/corpus_$t
	mkdir -p "$dir"
	case $t in
	toml) find ../shared/toml-test -name '*.toml' 2>/dev/null | head -1000 | while read -r f; do
		cp "$f" "$dir/$(echo "$f" | md5sum | cut -c1-16)"; done ;;
	config) cp examples/switchyard.toml "$dir/" ;;
	k8s_event | kubeconfig | mapfile | imap | pop3 | sieve | submission | store_answer | fleet_event | http_response | redis_reply | \
	pg_result | proxy_stage | fleet_dedup | redis_conn | pg_conn)
		cp tests/fuzz/seeds/"$t"/* "$dir/" 2>/dev/null || true ;;
	http) printf 'GET /a?b=c HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n' >"$dir/get"
		printf 'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\nConnection: x\r\n\r\n' >"$dir/post" ;;
	esac
}

build_lib
for t in "${targets[@]}"; do
	echo "== $t: build"
	build "$t"
	seed "$t"
	echo "== $t: run ${secs}s"
	# stdin closed, run from an empty directory: inputs naming files find nothing.
	mkdir -p "$out/cwd"
	dict=()
	[ -f "tests/fuzz/$t.dict" ] && dict=(-dict="$PWD/tests/fuzz/$t.dict")
	# The protocol targets need room for lines beyond SY_LINE_MAX (32 KiB); the fleet
	# record needs only a few hundred events (400 for 1200 bytes) to fill its 256 origins.
	maxlen=8192
	case $t in imap | pop3 | sieve | submission) maxlen=40000 ;; fleet_dedup) maxlen=1200 ;; esac
	runs=()
	[ -n "${FUZZ_RUNS:-}" ] && runs=(-runs="$FUZZ_RUNS")
	(cd "$out/cwd" && "../fuzz_$t" -max_total_time="$secs" "${runs[@]}" -timeout="${FUZZ_TIMEOUT:-10}" -rss_limit_mb=2048 -max_len=$maxlen \
		"${dict[@]}" -artifact_prefix="../crash_$t-" "../corpus_$t" </dev/null)
done
