//! loom models of shardbus's concurrency protocols live in `tests/`. They compile to
//! nothing unless the workspace is built with `RUSTFLAGS="--cfg shardbus_loom"`;
//! `scripts/loom.sh` runs them.
