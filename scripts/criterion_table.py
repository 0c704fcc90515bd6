#!/usr/bin/env python3
"""Prints the M msgs/s table of docs/benchmarks.md's criterion section from criterion's output.

Usage: scripts/criterion_table.py [target/criterion]

For every benchmark of the `throughput/*` and `scaling/*` groups it reads criterion's median
estimate of the time per iteration (`new/estimates.json`) and the elements per iteration
(`new/benchmark.json`, `Throughput::Elements`: the messages one verified run moves) and prints
elements / median time in millions per second: one row per group, one column per runner.
"""

import json
import os
import sys

COLUMNS = [
    "shardbus",
    "shardbus-batch64",
    "crossbeam_router",
    "seed",
    "disruptor",
    "floor-crossbeam_bounded",
    "floor-std_sync_channel",
    "floor-array_queue",
    "floor-ring",
    "shards=1",
    "shards=2",
]
GROUPS = ("throughput/", "scaling/")


def load(root):
    rows = {}
    for dirpath, _dirs, files in os.walk(root):
        if not dirpath.endswith(os.sep + "new") or "benchmark.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json"), encoding="utf-8") as f:
            bench = json.load(f)
        if not bench["group_id"].startswith(GROUPS):
            continue
        elements = (bench.get("throughput") or {}).get("Elements")
        if not elements:
            continue
        with open(os.path.join(dirpath, "estimates.json"), encoding="utf-8") as f:
            median_ns = json.load(f)["median"]["point_estimate"]
        rows.setdefault(bench["group_id"], {})[bench["function_id"]] = (
            elements / median_ns * 1e3
        )
    return rows


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
    rows = load(root)
    extra = sorted({c for r in rows.values() for c in r} - set(COLUMNS))
    columns = COLUMNS + extra
    print("| group | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for group in sorted(rows):
        cells = [f"{rows[group][c]:.2f}" if c in rows[group] else "" for c in columns]
        print(f"| `{group}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
