#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit/integration/doc tests, loom models, and a
# short run of the log's fuzz targets.
# Usage: scripts/test.sh            (everything; about 20 minutes on 2 cores)
#        SKIP_LOOM=1 scripts/test.sh (everything but the loom models)
#        SKIP_FUZZ=1 scripts/test.sh (everything but the fuzz targets; FUZZ_SECONDS sets
#                                     their run time, 20 s each by default)
set -euo pipefail
cd "$(dirname "$0")/.."

for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
        rustup component add "$component"
    fi
done

echo "== rustfmt"
cargo fmt --all -- --check

echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The `serde` feature (`SerdeCodec`) is off by default: lint and test it too.
cargo clippy -p shardbus --all-targets --all-features --locked -- -D warnings

echo "== unit, integration and doc tests"
cargo test --workspace --locked

echo "== the same for the library with every feature (serde)"
cargo test -p shardbus --all-features --locked

if [[ "${SKIP_LOOM:-0}" != "1" ]]; then
    echo "== loom models"
    scripts/loom.sh
fi

if [[ "${SKIP_FUZZ:-0}" != "1" ]]; then
    echo "== fuzz targets (log recovery, Reader, inspect)"
    scripts/fuzz.sh
fi
echo "== all tests passed"
