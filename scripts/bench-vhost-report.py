#!/usr/bin/env python3
"""Summarises bench-vhost.sh's JSON reports: medians per contender, depth and workload.

Usage: bench-vhost-report.py OUT_DIR TREE_BYTES
Prints markdown tables. If $BENCH_RATIOS names a file, appends chart lines to it
(`metric<TAB>peer<TAB>ratio<TAB>target`, ratio above 1 = ours better; see bench-chart.py).
"""
import json
import os
import re
import statistics
import sys
from collections import defaultdict

CONTENDERS = ["ours-zstd", "ours-chunkframes", "ours-plain", "virtiofsd", "nydusd"]
# bench-vhost.sh runs these in this order; the second read finds warm caches.
LABELS = ["walk", "readdirplus", "read (cold)", "read (warm)", "random 4K"]
HEADLINE_DEPTH = 16
RSS_TARGET_MIB = 64


def load(out_dir):
    runs = defaultdict(list)  # (contender, depth) -> [report]
    for name in sorted(os.listdir(out_dir)):
        m = re.fullmatch(r"(.+)-d(\d+)-r\d+\.json", name)
        if m:
            with open(os.path.join(out_dir, name)) as f:
                report = json.load(f)
            store = os.path.join(out_dir, name[: -len(".json")] + ".store")
            report["store_mib"] = int(open(store).read().strip() or 0) / 1024 if os.path.exists(store) else 0
            runs[(m.group(1), int(m.group(2)))].append(report)
    return runs


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(reports):
    """Per workload index: median ops/s, MB/s, p50, p99, CPU s; and median peak RSS MiB."""
    rows = []
    for i, label in enumerate(LABELS):
        ws = [r["workloads"][i] for r in reports if len(r["workloads"]) > i]
        rows.append(
            {
                "label": label,
                "ops_s": med([w["ops_per_s"] for w in ws]),
                "mb_s": med([w["mb_per_s"] for w in ws]),
                "p50": med([w["p50_us"] for w in ws]),
                "p99": med([w["p99_us"] for w in ws]),
                "cpu": med([w["backend_cpu_s"] for w in ws]),
                "bytes": med([w["bytes"] for w in ws]),
            }
        )
    rss = med([max((w["backend_peak_rss_kib"] or 0) for w in r["workloads"]) / 1024 for r in reports])
    store = med([r["store_mib"] for r in reports])
    return rows, (rss, store)


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main():
    out_dir, tree_bytes = sys.argv[1], int(sys.argv[2])
    runs = load(out_dir)
    depths = sorted({d for (_, d) in runs})
    stats = {key: summarise(reps) for key, reps in runs.items()}
    nruns = max(len(r) for r in runs.values())
    print(f"Tree: {tree_bytes / 2**20:.0f} MiB. Medians of {nruns} runs; CPU = daemon utime+stime.")
    for depth in depths:
        print(f"\n| depth {depth} | contender | ops/s | MB/s | p50 us | p99 us | CPU s | CPU s/GB |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for i, label in enumerate(LABELS):
            for c in CONTENDERS:
                if (c, depth) not in stats:
                    continue
                r = stats[(c, depth)][0][i]
                per_gb = r["cpu"] / (r["bytes"] / 1e9) if r["cpu"] is not None and r["bytes"] else None
                per_gb = per_gb if "read" in label or "random" in label else None
                print(
                    f"| {label} | {c} | {fmt(r['ops_s'], '.0f')} | {fmt(r['mb_s'], '.1f')} | "
                    f"{fmt(r['p50'], '.1f')} | {fmt(r['p99'], '.1f')} | {fmt(r['cpu'], '.3f')} | "
                    f"{fmt(per_gb, '.2f')} |"
                )
    print(
        "\nMemory after a whole-tree read, MiB (medians): peak RSS (VmHWM), then + the largest"
        " chunk store the daemon held (verified chunks in an unnamed file in /var/tmp: page cache"
        " outside RSS, reclaimable)."
    )
    present = [c for c in CONTENDERS if any((c, d) in stats for d in depths)]
    print("\n| memory | " + " | ".join(present) + " |")
    print("|---|" + "---:|" * len(present))
    for depth in depths:
        cells = []
        for c in present:
            if (c, depth) not in stats:
                cells.append("-")
                continue
            rss, store = stats[(c, depth)][1]
            cells.append(fmt(rss, ".1f") + (f" + {store:.0f}" if store else ""))
        print(f"| depth {depth} | " + " | ".join(cells) + " |")

    d = HEADLINE_DEPTH if HEADLINE_DEPTH in depths else depths[-1]
    ratios = []

    def row(c, label):
        return stats[(c, d)][0][LABELS.index(label)] if (c, d) in stats else None

    for label, key, better, target_for in [
        ("walk", "cpu", "lower", {"virtiofsd": 2.0}),
        ("walk", "ops_s", "higher", {"virtiofsd": 2.0}),
        ("readdirplus", "cpu", "lower", {}),
        ("read (warm)", "cpu", "lower", {"virtiofsd": 1.0, "nydusd": 1.0}),
        ("read (cold)", "cpu", "lower", {}),
        ("random 4K", "cpu", "lower", {}),
    ]:
        ours = row("ours-zstd", label)
        for peer in ["virtiofsd", "nydusd"]:
            theirs = row(peer, label)
            if not ours or not theirs or not ours[key] or not theirs[key]:
                continue
            ratio = theirs[key] / ours[key] if better == "lower" else ours[key] / theirs[key]
            what = "CPU" if key == "cpu" else "ops/s"
            ratios.append((f"vhost {label} {what}, d={d}", peer, ratio, target_for.get(peer)))
    ours_rss, ours_store = stats.get(("ours-zstd", d), (None, (None, None)))[1]
    if ours_rss:
        ratios.append((f"daemon peak RSS vs {RSS_TARGET_MIB} MiB, d={d}", "target", RSS_TARGET_MIB / ours_rss, 1.0))
        ratios.append(
            (
                f"daemon peak RSS + chunk store vs {RSS_TARGET_MIB} MiB, d={d}",
                "target",
                RSS_TARGET_MIB / (ours_rss + (ours_store or 0)),
                1.0,
            )
        )
    print(f"\n| ours-zstd at depth {d} vs peer (above 1 = ours better) | peer | ratio | target |")
    print("|---|---|---:|---:|")
    for metric, peer, ratio, target in ratios:
        print(f"| {metric} | {peer} | {ratio:.2f}x | {fmt(target, '.1f')} |")
    path = os.environ.get("BENCH_RATIOS")
    if path:
        with open(path, "a") as f:
            for metric, peer, ratio, target in ratios:
                f.write(f"{metric}\t{peer}\t{ratio:.3f}\t{'' if target is None else target}\n")


if __name__ == "__main__":
    main()
