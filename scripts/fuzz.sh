#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ (the log's recovery, Reader and inspect over damaged
# shard directories; see docs/persistence.md) for FUZZ_SECONDS each, on stable Rust
# (--sanitizer none). Installs cargo-fuzz if it is missing. Exits non-zero if a target
# crashes; the input is then saved under fuzz/artifacts/<target>/ and the log's tail shows
# the panic and the input. The corpus grows in fuzz/corpus/<target>/ (not in git).
# Usage: scripts/fuzz.sh                          (every target, 20 s each)
#        FUZZ_SECONDS=600 scripts/fuzz.sh recover  (one target, longer)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-20}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# `cargo fuzz` has no --locked: check fuzz/Cargo.lock is up to date first.
cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null

targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    mapfile -t targets < <(cargo fuzz list)
fi

echo "== building fuzz targets"
cargo fuzz build --sanitizer none

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for target in "${targets[@]}"; do
    echo "== fuzz $target (${seconds} s)"
    # -timeout: an input that takes 10 s is a hang worth a report (default 1200 s).
    if ! cargo fuzz run "$target" --sanitizer none -- \
        -max_total_time="$seconds" -timeout=10 >"$log" 2>&1; then
        tail -n 150 "$log"
        echo "== fuzz $target: FAILED (input saved under fuzz/artifacts/$target/)"
        exit 1
    fi
    # The final libFuzzer stats line: executions, coverage, features, corpus.
    grep -E '^#[0-9]+[[:space:]]+DONE' "$log" || true
    grep -E '^Done [0-9]+ runs' "$log" || true
done
echo "== fuzzing passed"
