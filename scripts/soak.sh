#!/usr/bin/env bash
# Crash-consistency soak (issue 18): kills `coalition run`, `coalition finding add` and
# `coalition import` with SIGKILL at random, seeded moments, a thousand times by
# default, checking the store after every kill (tests/tests/crash.rs, test `crash_soak`).
#
#   scripts/soak.sh [KILLS] [SEED]
#
# Prints the seed first (replay a run by passing it back) and, every 50 rounds and at
# the end, the figures: kills, acknowledged records, lost (must be 0), duplicated (must
# be 0), store failures (must be 0). Exits non-zero if any of those is not 0.
set -euo pipefail
cd "$(dirname "$0")/.."
export COALITION_SOAK_KILLS="${1:-1000}"
if [ -n "${2:-}" ]; then
    export COALITION_SEED="$2"
fi
# Build once, then run copies of the test and of `coalition`: the soak takes a while, and
# a rebuild of the workspace meanwhile must not change the program under test.
cargo build -p coalition-node --bin coalition --locked
test_bin=$(cargo test -p coalition-tests --test crash --locked --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
snapshot=$(mktemp -d "${TMPDIR:-/tmp}/coalition-soak.XXXXXX")
trap 'rm -rf "$snapshot"' EXIT
cp "$target_dir/debug/coalition" "$snapshot/coalition"
cp "$test_bin" "$snapshot/crash"
COALITION_BIN="$snapshot/coalition" "$snapshot/crash" --ignored --exact crash_soak --nocapture
