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
[ ${#targets[@]} -gt 0 ] || targets=(toml config sasl identifier proxy_protocol k8s_event kubeconfig http)
out=${FUZZ_OUT:-build-fuzz}
mkdir -p "$out"

cflags=(-std=c11 -D_GNU_SOURCE -DSWITCHYARD_VERSION='"fuzz"' -g -O1
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Iinclude)
deps=(libuv openssl jansson hiredis libpq)

build() {
	local t=$1
	case $t in
	toml) srcs=(src/config/toml.c); libs=(-lm) ;;
	sasl) srcs=(src/auth/sasl.c); libs=(-lcrypto) ;;
	identifier) srcs=(src/auth/sasl.c src/auth/token.c src/auth/identifier.c); libs=(-lcrypto -ljansson) ;;
	proxy_protocol) srcs=(src/core/proxy_protocol.c); libs=() ;;
	k8s_event) srcs=(src/k8s/endpointslice.c); libs=(-ljansson) ;;
	kubeconfig) srcs=(src/k8s/kubeconfig.c src/auth/sasl.c); libs=(-lyaml -lcrypto) ;;
	http)
		mapfile -t srcs < <(ls src/*/*.c | grep -v "^src/main.c$")
		read -r -a pc <<<"$(pkg-config --cflags --libs "${deps[@]}")"
		libs=("${pc[@]}" -lhttp_parser -lm -lpthread)
		;;
	config)
		# The typed configuration reaches most of the core: link all of it.
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
	k8s_event | kubeconfig) cp tests/fuzz/seeds/$t/* "$dir/" 2>/dev/null || true ;;
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
	(cd "$out/cwd" && "../fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
		-artifact_prefix="../crash_$t-" "../corpus_$t" </dev/null)
done
