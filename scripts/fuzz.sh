#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60), then prints, per
# target, executions, executions per second, corpus size and crashes.
#
#   scripts/fuzz.sh [SECONDS]          all targets
#   FUZZ_TARGETS="bundle api_query" scripts/fuzz.sh 600
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`); the
# stable build and tests never do. Builds go to $FUZZ_TARGET_DIR (default
# target/fuzz, beside the stable target dir). Corpora grow under fuzz/corpus/<target>
# (not kept in git), starting from the seeds in fuzz/seeds/<target>. A crash leaves its
# input in fuzz/artifacts/<target>/: make it a regression (fuzz/regressions/<target>/,
# replayed by the stable test `fuzzing::tests::fuzz_regressions`) and fix the bug.
#
# FUZZ_SANITIZER (default none): the workspace forbids unsafe code, so the bugs sought
# are panics, arithmetic overflows (debug assertions are on), hangs and memory blow-ups,
# which need no sanitizer; `address` finds memory errors in dependencies' unsafe code at
# about half the speed. FUZZ_RSS_MB (default 2048) and FUZZ_TIMEOUT (seconds for one
# input, default 10) make blow-ups and hangs crashes too.
set -uo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-60}"
SANITIZER="${FUZZ_SANITIZER:-none}"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/target/fuzz}"
export CARGO_INCREMENTAL=0

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: the nightly toolchain is missing: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

cd fuzz
TARGETS="${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}"
echo "building fuzz targets (sanitizer: $SANITIZER, debug assertions on) ..."
if ! cargo +nightly fuzz build -s "$SANITIZER" -a; then
    echo "fuzz.sh: the fuzz build failed" >&2
    exit 2
fi

LOGS="$(mktemp -d)"
TOTAL_CRASHES=0
ROWS=()
for t in $TARGETS; do
    mkdir -p "corpus/$t" "artifacts/$t"
    before=$(find "artifacts/$t" -type f | wc -l)
    seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    echo "== $t: ${SECONDS_EACH}s"
    cargo +nightly fuzz run -s "$SANITIZER" -a "$t" "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1 \
        -rss_limit_mb="${FUZZ_RSS_MB:-2048}" -timeout="${FUZZ_TIMEOUT:-10}" \
        >"$LOGS/$t.log" 2>&1
    rc=$?
    after=$(find "artifacts/$t" -type f | wc -l)
    crashes=$((after - before))
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then crashes=1; fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$LOGS/$t.log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$LOGS/$t.log" | tail -1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$LOGS/$t.log" | tail -1)
    corpus=$(find "corpus/$t" -type f | wc -l)
    if [ "$crashes" -ne 0 ]; then
        echo "   CRASH in $t (rc $rc): see $LOGS/$t.log and fuzz/artifacts/$t/"
        grep -E "panicked at|ERROR: libFuzzer|SUMMARY" "$LOGS/$t.log" | head -5 | sed 's/^/   /'
    fi
    TOTAL_CRASHES=$((TOTAL_CRASHES + crashes))
    ROWS+=("$(printf '%-18s %12s %9s %8s %8s %8s' "$t" "${execs:-?}" "${rate:-?}" "$corpus" "${rss:-?}" "$crashes")")
done

echo
echo "fuzzing, ${SECONDS_EACH}s per target, sanitizer $SANITIZER, $(date -u +%Y-%m-%dT%H:%MZ)"
printf '%-18s %12s %9s %8s %8s %8s\n' target executions exec/s corpus rss_mb crashes
printf '%s\n' "${ROWS[@]}"
echo "total crashes: $TOTAL_CRASHES (logs in $LOGS)"
[ "$TOTAL_CRASHES" -eq 0 ]
