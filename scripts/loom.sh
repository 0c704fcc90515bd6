#!/usr/bin/env bash
# Runs the loom models in loom-tests/ against shardbus built with --cfg shardbus_loom.
# LOOM_MAX_PREEMPTIONS bounds the explored schedules: 2 here (CI-sized, ~10 minutes on
# 2 cores); run `LOOM_MAX_PREEMPTIONS=3 scripts/loom.sh` for a deeper (much longer)
# search. Extra arguments go to `cargo test` (e.g. a model's name).
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg shardbus_loom ${RUSTFLAGS:-}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/loom"
cargo test -p shardbus-loom-tests --release --locked "$@"
