#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: formatting, unit
# tests and the TOML conformance suite (ctest), and the integration tests
# (pytest against real Dovecot, Redis and PostgreSQL on loopback) -- all under
# AddressSanitizer and UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh

# Formatting is part of the test: one style, enforced.
bad=$(git ls-files '*.c' '*.h' | xargs -r clang-format --dry-run --Werror 2>&1 | grep -c 'error:' || true)
if [ "$bad" != "0" ]; then
	git ls-files '*.c' '*.h' | xargs -r clang-format --dry-run --Werror 2>&1 | head -40
	echo "formatting: $bad problems (run: clang-format -i \$(git ls-files '*.c' '*.h'))" >&2
	exit 1
fi

# The layers stay one-way (docs/ARCHITECTURE.md): no file includes a header
# from a layer above its own.
/usr/bin/python3 scripts/check-layers.py

jobs=$(nproc)
# The release build is what the demo and benchmarks use.
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
# The sanitizer build is what the tests run.
cmake -S . -B build-san -DCMAKE_BUILD_TYPE=Debug -DSWITCHYARD_SANITIZE=address >/dev/null
cmake --build build-san -j"$jobs"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir build-san --output-on-failure -j"$jobs"

# Fuzz smoke run: every libFuzzer target (tests/fuzz/README.md) built with
# clang under ASan+UBSan and run for 5 seconds from its seeds and whatever
# corpus earlier runs left in build-fuzz/, so a target that stops building,
# or a parser that crashes on its seeds, fails the test (about 2 minutes in
# all). Long runs: tests/fuzz/run.sh [seconds] [target ...].
FUZZ_OUT=build-fuzz tests/fuzz/run.sh 5

if [ -d tests/integration ] && ls tests/integration/test_*.py >/dev/null 2>&1; then
	SWITCHYARD_BIN="$PWD/build-san/switchyard" /usr/bin/python3 -m pytest -q tests/integration
fi

# ThreadSanitizer: the unit tests (the shared cache hammered by threads) and
# the integration tests that run several workers at once (cache coalescing
# across loops, reloads while sessions run, metrics scrapes during load, cluster
# node sets swapped by discovery while workers route through them, fleet events
# applied from the main loop while workers route and bridge).
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DSWITCHYARD_SANITIZE=thread >/dev/null
cmake --build build-tsan -j"$jobs"
export TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1"
ctest --test-dir build-tsan --output-on-failure -j"$jobs"
SWITCHYARD_BIN="$PWD/build-tsan/switchyard" /usr/bin/python3 -m pytest -q \
	tests/integration/test_routing.py tests/integration/test_reload_mapping.py \
	tests/integration/test_admin.py tests/integration/test_k8s_cluster.py \
	tests/integration/test_fleet.py

# Packaging: the container image (built with podman and run read-only as
# uid 65532 in front of test Dovecots), the Helm chart (lint, render, the
# proxy's --check-config on every rendered configuration, invariants), the
# k8s/ base, and static checks of the e2e suite and the workflows. The
# release build is what the image contains.
SWITCHYARD_BIN="$PWD/build/switchyard" /usr/bin/python3 -m pytest -q tests/packaging
