#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for a while.
#
#   tests/fuzz/run.sh [seconds per target] [target ...]    (default: 60, all)
#
# Binaries, corpora and crash artifacts go to $FUZZ_OUT (default
# build-fuzz/). Not part of scripts/test.sh: it needs clang. A crash stops
# the script with libFuzzer's report; rerun one input with
# build-fuzz/fuzz_<target> <crash file>.
set -euo pipefail
cd "$(dirname "$0")/../.."

secs=${1:-60}
shift || true
targets=("$@")
all=(toml config sasl identifier proxy_protocol k8s_event kubeconfig http mapfile
	imap pop3 sieve submission store_answer fleet_event)
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
out=${FUZZ_OUT:-build-fuzz}
mkdir -p "$out"

cflags=(-std=c11 -D_GNU_SOURCE -DSWITCHYARD_VERSION='"fuzz"' -g -O1
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Iinclude)
deps=(libuv openssl jansson hiredis libpq libcurl yaml-0.1)

build() {
	local t=$1
	case $t in
	toml) srcs=(src/config/toml.c); libs=(-lm) ;;
	sasl) srcs=(src/auth/sasl.c); libs=(-lcrypto) ;;
	identifier) srcs=(src/auth/sasl.c src/auth/token.c src/auth/identifier.c); libs=(-lcrypto -ljansson) ;;
	proxy_protocol) srcs=(src/core/proxy_protocol.c); libs=() ;;
	mapfile) srcs=(src/core/mapfile.c src/core/errors.c); libs=() ;;
	imap | pop3 | sieve | submission)
		# The module, the token helpers, and what its credentials and the
		# test session's configuration need (tests/fuzz/proto_driver.h).
		mapfile -t srcs < <(ls src/proto/"$t".c src/proto/tokens.c src/auth/*.c src/config/*.c src/core/*.c)
		read -r -a pc <<<"$(pkg-config --cflags --libs "${deps[@]}")"
		libs=("${pc[@]}" -lm)
		;;
	k8s_event) srcs=(src/k8s/endpointslice.c); libs=(-ljansson) ;;
	kubeconfig) srcs=(src/k8s/kubeconfig.c src/auth/sasl.c); libs=(-lyaml -lcrypto) ;;
	http)
		mapfile -t srcs < <(ls src/*/*.c | grep -v "^src/main.c$")
		read -r -a pc <<<"$(pkg-config --cflags --libs "${deps[@]}")"
		libs=("${pc[@]}" -lhttp_parser -lm -lpthread)
		;;
	config | store_answer | fleet_event)
		# The typed configuration reaches most of the core, the router all
		# of it: link everything.
		mapfile -t srcs < <(ls src/*/*.c | grep -v "^src/main.c$")
		read -r -a pc <<<"$(pkg-config --cflags --libs "${deps[@]}")"
		libs=("${pc[@]}" -lhttp_parser -lm -lpthread)
		;;
	*) echo "unknown target $t" >&2; exit 2 ;;
	esac
	clang "${cflags[@]}" "${srcs[@]}" "tests/fuzz/fuzz_$t.c" -o "$out/fuzz_$t" "${libs[@]}"
}

seed() {
	local t=$1 dir=$out/corpus_$t
	mkdir -p "$dir"
	case $t in
	toml) find ../shared/toml-test -name '*.toml' 2>/dev/null | head -1000 | while read -r f; do
		cp "$f" "$dir/$(echo "$f" | md5sum | cut -c1-16)"; done ;;
	config) cp examples/switchyard.toml "$dir/" ;;
	k8s_event | kubeconfig | mapfile | imap | pop3 | sieve | submission | store_answer | fleet_event)
		cp tests/fuzz/seeds/$t/* "$dir/" 2>/dev/null || true ;;
	http) printf 'GET /a?b=c HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n' >"$dir/get"
		printf 'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\nConnection: x\r\n\r\n' >"$dir/post" ;;
	esac
}

for t in "${targets[@]}"; do
	echo "== $t: build"
	build "$t"
	seed "$t"
	echo "== $t: run ${secs}s"
	# stdin closed, run from an empty directory: inputs naming files find nothing.
	mkdir -p "$out/cwd"
	dict=()
	[ -f "tests/fuzz/$t.dict" ] && dict=(-dict="$PWD/tests/fuzz/$t.dict")
	# The protocol targets need room for lines beyond SY_LINE_MAX (32 KiB).
	maxlen=8192
	case $t in imap | pop3 | sieve | submission) maxlen=40000 ;; esac
	(cd "$out/cwd" && "../fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=$maxlen \
		"${dict[@]}" -artifact_prefix="../crash_$t-" "../corpus_$t" </dev/null)
done
