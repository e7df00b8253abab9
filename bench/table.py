"""Prints the markdown tables of docs/BENCHMARKS.md from bench/results/*.jsonl.

    python3 bench/table.py [FEDSHIELD_JSONL [FLOWER_JSONL]]
    python3 bench/table.py --pairs PAIRS_JSONL   (written by bench/pairs.sh)
"""

import json
import sys

MIB = 1024 * 1024


def load(path):
    try:
        with open(path) as lines:
            return [json.loads(line) for line in lines if line.strip()]
    except FileNotFoundError:
        return []


def params_label(params):
    return {100_000: "100k", 1_000_000: "1M", 10_000_000: "10M"}.get(params, str(params))


def main(ours_path="bench/results/fedshield.jsonl", flower_path="bench/results/flower.jsonl"):
    ours = {(r["participants"], r["params"]): r for r in load(ours_path)}
    flower = {(r["participants"], r["params"]): r for r in load(flower_path)}
    print("| K × P | round median / max (s) | MiB moved per round (payload) | TCP / TLS baseline (s) | round / TLS baseline | coordinator peak MiB (target) | participant peak MiB (target) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for key in sorted(ours, key=lambda k: (k[1], k[0])):
        r = ours[key]
        b = r["baseline"]
        print(
            f"| {key[0]} × {params_label(key[1])} "
            f"| {r['median_round_seconds']:.3f} / {r['max_round_seconds']:.3f} "
            f"| {r['bytes_moved_per_round'] / MIB:.1f} ({r['min_bytes_per_round'] / MIB:.1f}) "
            f"| {b['tcp_seconds']:.3f} / {b['tls_seconds']:.3f} "
            f"| {b['round_over_baseline']:.2f} "
            f"| {r['coordinator_peak_rss_bytes'] / MIB:.1f} ({r['coordinator_memory_target_bytes'] / MIB:.0f}) "
            f"| {r['max_participant_peak_rss_bytes'] / MIB:.1f} ({r['participant_memory_target_bytes'] / MIB:.0f}) |"
        )
    print()
    print("| K × P | fedshield round median (s) | Flower round median / max (s) | Flower / fedshield | fedshield coordinator / Flower server peak MiB | fedshield participant / Flower client peak MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for key in sorted(ours, key=lambda k: (k[1], k[0])):
        r = ours[key]
        f = flower.get(key)
        if f is None or f.get("failed"):
            print(f"| {key[0]} × {params_label(key[1])} | {r['median_round_seconds']:.3f} | failed | — | {r['coordinator_peak_rss_bytes'] / MIB:.0f} / — | {r['max_participant_peak_rss_bytes'] / MIB:.0f} / — |")
            continue
        print(
            f"| {key[0]} × {params_label(key[1])} "
            f"| {r['median_round_seconds']:.3f} "
            f"| {f['median_round_seconds']:.3f} / {f['max_round_seconds']:.3f} "
            f"| {f['median_round_seconds'] / r['median_round_seconds']:.1f}× "
            f"| {r['coordinator_peak_rss_bytes'] / MIB:.0f} / {f['server_peak_rss_bytes'] / MIB:.0f} "
            f"| {r['max_participant_peak_rss_bytes'] / MIB:.0f} / {f['max_client_peak_rss_bytes'] / MIB:.0f} |"
        )


def pairs(path):
    """Before/after table of an interleaved comparison (bench/pairs.sh): the
    median over a cell's repeated pairs of each run's median round time."""
    cells = {}
    for r in load(path):
        cells.setdefault((r["participants"], r["params"]), {}).setdefault(r["side"], []).append(r)
    print("| K × P | pairs | before (s) | after (s) | change | TLS baseline (s) | before / baseline | after / baseline | coordinator peak MiB before → after |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key in sorted(cells, key=lambda k: (k[1], k[0])):
        befores, afters = cells[key].get("before", []), cells[key].get("after", [])
        if not befores or not afters:
            continue
        before = median([r["median_round_seconds"] for r in befores])
        after = median([r["median_round_seconds"] for r in afters])
        tls = median([r["baseline"]["tls_seconds"] for r in afters])
        before_rss = median([r["coordinator_peak_rss_bytes"] for r in befores])
        after_rss = median([r["coordinator_peak_rss_bytes"] for r in afters])
        print(
            f"| {key[0]} × {params_label(key[1])} "
            f"| {min(len(befores), len(afters))} "
            f"| {before:.3f} "
            f"| {after:.3f} "
            f"| {after / before - 1:+.0%} "
            f"| {tls:.3f} "
            f"| {before / tls:.2f} "
            f"| {after / tls:.2f} "
            f"| {before_rss / MIB:.0f} → {after_rss / MIB:.0f} |"
        )


def median(values):
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


if __name__ == "__main__":
    if sys.argv[1:2] == ["--pairs"]:
        pairs(sys.argv[2])
    else:
        main(*sys.argv[1:])
