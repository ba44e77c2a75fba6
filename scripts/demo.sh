#!/usr/bin/env bash
# Installs what is missing, builds, and runs the demo: two local Dovecot
# backends ("legacy" and "new") behind Switchyard with a file mapping.
# Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target switchyard
exec /usr/bin/python3 scripts/demo.py "$@"
