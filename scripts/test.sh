#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit/integration/doc tests, loom models, and a
# short run of the log's fuzz targets.
# Usage: scripts/test.sh            (everything; about 20 minutes on 2 cores; installs
#                                     nats-server for the NATS bridge's tests if missing)
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

echo "== toolchain against the declared rust-version"
# The workspace declares as its rust-version the toolchain this suite builds and tests with.
# Older than declared: fail. Newer: say loudly that the declared version was not built by
# this run (no older toolchain is installed here to build it).
declared=$(sed -n 's/^rust-version = "\([0-9.]*\)"/\1/p' Cargo.toml | head -n 1 | cut -d. -f1,2)
actual=$(rustc --version | sed -n 's/^rustc \([0-9]*\.[0-9]*\).*/\1/p')
if [[ -z "$declared" || -z "$actual" ]]; then
    echo "cannot read the declared rust-version ($declared) or rustc's version ($actual)" >&2
    exit 1
fi
for manifest in cli/Cargo.toml bench/Cargo.toml loom-tests/Cargo.toml nats/Cargo.toml; do
    if ! grep -q '^rust-version.workspace = true' "$manifest"; then
        echo "$manifest does not inherit the workspace rust-version" >&2
        exit 1
    fi
done
if [[ "$actual" == "$declared" ]]; then
    echo "rustc $actual: the declared rust-version $declared is the toolchain built here"
elif [[ "$(printf '%s\n%s\n' "$declared" "$actual" | sort -V | head -n 1)" == "$declared" ]]; then
    echo "WARNING: built with rustc $actual, newer than the declared rust-version $declared;" \
        "this run does not show that $declared builds" >&2
else
    echo "rustc $actual is older than the declared rust-version $declared" >&2
    exit 1
fi

echo "== nats-server (the NATS bridge's tests run against a real one)"
# Installed from the distribution's package when missing. Under CI=true a server that is
# missing and cannot be installed fails the run; elsewhere the bridge's tests skip with
# a loud message.
# Debian's package installs it as /usr/sbin/nats-server, which is not on every user's PATH:
# found there, it is handed to the tests through NATS_SERVER (which they honour).
if ! command -v nats-server >/dev/null 2>&1 && [[ -z "${NATS_SERVER:-}" ]] \
    && [[ -x /usr/sbin/nats-server ]]; then
    export NATS_SERVER=/usr/sbin/nats-server
fi
if ! command -v nats-server >/dev/null 2>&1 && [[ -z "${NATS_SERVER:-}" ]]; then
    sudo_cmd=""
    if [[ "$(id -u)" != "0" ]] && command -v sudo >/dev/null 2>&1; then
        sudo_cmd="sudo"
    fi
    if ! { $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq nats-server; }; then
        if [[ "${CI:-}" == "true" ]]; then
            echo "nats-server is missing and could not be installed (CI=true: a failure)" >&2
            exit 1
        fi
        echo "WARNING: nats-server is missing and could not be installed;" \
            "the NATS bridge's tests will skip" >&2
    fi
fi
if [[ -z "${NATS_SERVER:-}" ]] && ! command -v nats-server >/dev/null 2>&1 \
    && [[ -x /usr/sbin/nats-server ]]; then
    export NATS_SERVER=/usr/sbin/nats-server # installed just now, off the PATH
fi
if [[ -n "${NATS_SERVER:-}" ]]; then
    "$NATS_SERVER" --version
elif command -v nats-server >/dev/null 2>&1; then
    nats-server --version
fi

echo "== rustfmt"
cargo fmt --all -- --check

echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The features are off by default: lint and test them too. `serde` (the derives on the
# public plain-data types), `postcard` (`PostcardCodec`, implies `serde`) and `test-util`
# (the test doubles, which the crate's own tests enable through its dev-dependency).
cargo clippy -p shardbus --all-targets --all-features --locked -- -D warnings
# `serde` alone, without the codec.
cargo clippy -p shardbus --lib --features serde --locked -- -D warnings
# The CLI and the benchmark engine use only the public API: built on their own (no test
# targets, so the root crate's dev-dependency does not turn `test-util` on), and the docs
# without `test-util` link nothing that only that feature makes public.
cargo check -p shardbus-cli -p shardbus-bench --locked
RUSTDOCFLAGS="-D warnings" cargo doc -p shardbus --no-deps --locked

echo "== unit, integration and doc tests"
cargo test --workspace --locked

echo "== the same for the library with every feature (serde, postcard, test-util)"
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
