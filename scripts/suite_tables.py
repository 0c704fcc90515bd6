#!/usr/bin/env python3
"""Writes the "Tables of the committed run" section of docs/benchmarks.md from the suite JSON.

Usage: scripts/suite_tables.py [docs/bench-suite.json] [docs/benchmarks.md]

The section runs from its "## Tables of the committed run" heading to the next "## " heading and
is replaced whole; everything else in the file is left as it is. The JSON is what
`shardbus bench --suite --json PATH` writes.
"""

import json
import statistics
import sys

HEADING = "## Tables of the committed run"
COMMAND = "`shardbus bench --suite --reps {reps} --json docs/bench-suite.json`"


def ns(v):
    """A duration in ns as the tables print it."""
    if v < 1000:
        return f"{v:.0f} ns"
    if v < 1_000_000:
        return f"{v / 1000:.1f} µs"
    return f"{v / 1_000_000:.1f} ms"


def handled(counts):
    if len(counts) > 8:
        return f"{len(counts)} threads, {min(counts):,}–{max(counts):,} each"
    return "[" + ", ".join(str(c) for c in counts) + "]"


def median_run(series):
    runs = sorted(series["runs"], key=lambda r: r["msgs_per_sec"])
    return runs[(len(runs) - 1) // 2] if runs else None


def stamp(suite, messages=None):
    m = suite["machine"]
    parts = [
        COMMAND.format(reps=suite["reps"]),
        m["date"],
        m["cpu"],
        f"{m['cores']} cores",
        f"fences {m['fences']}",
        f"median of {suite['reps']} interleaved runs (range)",
    ]
    if messages is not None:
        parts.append(f"{messages:,} messages per run")
    return " · ".join(parts)


def group_table(suite, group):
    out = [f"### {group['title']}", "", stamp(suite, group["workload"]["messages"]), ""]
    out.append(
        "| runner | M msgs/s (range) | MB/s payload | p50 | p99 | p99.9 | max | verified "
        "| per-thread handled (median run) |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|")
    medians = []
    for s in group["series"]:
        med = median_run(s)
        if med is None:
            out.append(f"| {s['name']} | {s.get('error') or 'no run'} | | | | | | | |")
            medians.append(None)
            continue
        rates = [r["msgs_per_sec"] / 1e6 for r in s["runs"]]
        m = statistics.median(rates)
        medians.append(m)
        lat = med["latency"]
        verified = "yes" if all(r["exact"] for r in s["runs"]) else "**no**"
        out.append(
            f"| {s['name']} | {m:.2f} ({min(rates):.2f}–{max(rates):.2f}) "
            f"| {med['payload_mb_per_sec']:.0f} | {ns(lat['p50'])} | {ns(lat['p99'])} "
            f"| {ns(lat['p999'])} | {ns(lat['max'])} | {verified} "
            f"| {handled(med['per_thread_handled'])} |"
        )
    first = group["series"][0]["name"]
    ratios = [
        f"{first} / {s['name']} = {medians[0] / m:.2f}×"
        for s, m in zip(group["series"][1:], medians[1:])
        if m and medians[0]
    ]
    out += ["", "Ratios of medians: " + "; ".join(ratios), ""]
    return out


def closed_loop(suite):
    out = ["### Closed loop (64 actors, 256 tokens in flight)", "", stamp(suite), ""]
    out.append("| shards | work rounds / msg | M msgs/s median | runs | per-shard handled | verified |")
    out.append("|---|---|---|---|---|---|")
    med = {}
    for row in suite["scaling"]:
        rates = [r / 1e6 for r in row["msgs_per_sec"]]
        m = statistics.median(rates)
        med[(row["shards"], row["work"])] = m
        out.append(
            f"| {row['shards']} | {row['work']} | {m:.2f} | "
            + ", ".join(f"{r:.2f}" for r in rates)
            + f" | {handled(row['per_shard_handled'])} | {'yes' if row['exact'] else '**no**'} |"
        )
    out.append("")
    for work in sorted({w for (_, w) in med}):
        if (1, work) in med and (2, work) in med:
            out.append(f"- work {work}: 2 shards / 1 shard = {med[(2, work)] / med[(1, work)]:.2f}×")
    cpu = suite.get("cpu_scaling") or []
    if cpu:
        out.append(
            "- host compute scaling in the same run (2 pinned threads / 1): "
            + ", ".join(f"{c:.2f}×" for c in cpu)
            + f" (median {statistics.median(cpu):.2f}×)"
        )
    out.append("")
    return out


def latency(suite):
    out = [
        "### Latency (ping-pong, RTT/2; shardbus rows also publish → handler entry)",
        "",
        stamp(suite),
        "",
        "| runner | pacing | shards | RTT/2 p50 | p99 | p99.9 | max "
        "| publish→handler p50 / p99 / p99.9 | shard CPU | p50 of each run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in suite["latency"]:
        pacing = "back to back" if row["interval_us"] is None else f"1 / {row['interval_us']} µs"
        shards = row["shards"] if row.get("shards") else "—"
        rtt = row["rtt_half"]
        one = row.get("one_way")
        one_way = (
            f"{one['p50']} / {one['p99']} / {one['p999']} ns" if one else "—"
        )
        cpu = ", ".join(f"{c * 100:.1f}%" for c in row.get("shard_cpu") or []) or "—"
        p50s = "[" + ", ".join(str(p) for p in row["p50s"]) + "]"
        out.append(
            f"| {row['name']} | {pacing} | {shards} | {rtt['p50']} ns | {rtt['p99']} ns "
            f"| {rtt['p999']} ns | {rtt['max']} ns | {one_way} | {cpu} | {p50s} |"
        )
    out.append("")
    return out


def main():
    json_path = sys.argv[1] if len(sys.argv) > 1 else "docs/bench-suite.json"
    md_path = sys.argv[2] if len(sys.argv) > 2 else "docs/benchmarks.md"
    with open(json_path, encoding="utf-8") as f:
        suite = json.load(f)
    lines = [
        HEADING,
        "",
        "Written by `scripts/suite_tables.py` from `docs/bench-suite.json` (the run the targets"
        " above quote).",
        "",
    ]
    for group in suite["groups"]:
        lines += group_table(suite, group)
    lines += closed_loop(suite)
    lines += latency(suite)
    with open(md_path, encoding="utf-8") as f:
        text = f.read()
    start = text.index(HEADING)
    end = text.index("\n## ", start + len(HEADING)) + 1
    text = text[:start] + "\n".join(lines) + "\n\n" + text[end:]
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
