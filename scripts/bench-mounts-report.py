#!/usr/bin/env python3
"""Summarises bench-mounts.sh's raw results: medians over runs, markdown tables.

Usage: bench-mounts-report.py OUT_DIR TREE_BYTES COUNT WALKS FIRST_READ
Prints the tables (or, with SUMMARY=1 in the environment, a short summary). Without SUMMARY,
if $BENCH_RATIOS names a file, appends chart lines to it (`metric<TAB>peer<TAB>ratio<TAB>target`,
ratio above 1 = ours better; see bench-chart.py).
"""
import json
import os
import re
import statistics
import sys
from collections import defaultdict

MIB = 1024  # KiB per MiB


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values):
    """(max - min) / median, as a fraction."""
    values = [v for v in values if v is not None]
    if len(values) < 2 or not statistics.median(values):
        return 0.0
    return (max(values) - min(values)) / statistics.median(values)


def pct(sorted_values, p):
    if not sorted_values:
        return None
    return sorted_values[round((len(sorted_values) - 1) * p)]


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def ratio(peer, ours):
    return peer / ours if peer and ours and peer > 0 and ours > 0 else None


def load(out_dir):
    mem = defaultdict(list)  # (contender, n) -> [dict]
    lat = defaultdict(list)  # contender -> [dict]
    cost = defaultdict(list)  # (mode, depth) -> [dict]
    for name in sorted(os.listdir(out_dir)):
        path = os.path.join(out_dir, name)
        m = re.fullmatch(r"mem-(\w+)-n(\d+)-r\d+\.json", name)
        if m:
            with open(path) as f:
                r = json.load(f)
            ws, held = r["report"]["workloads"], r["held"]
            read = len(ws) > 1
            mem[(m.group(1), int(m.group(2)))].append(
                {
                    "walk_rss": ws[0]["backend_rss_kib"] / MIB,
                    "walk_anon": ws[0]["backend_rss_anon_kib"] / MIB,
                    "read_rss": held["VmRSS"] / MIB if read else None,
                    "read_anon": held["RssAnon"] / MIB if read else None,
                    "peak": held["VmHWM"] / MIB,
                    "cache": held["cache_kib"] / MIB,
                    "threads": held["Threads"],
                    "read_bytes": ws[1]["bytes"] if read else None,
                    "mount_cpu_s": int(open(path[: -len(".json")] + ".mountcpu").read().strip()) / 1e9,
                }
            )
            continue
        m = re.fullmatch(r"lat-(\w+)-r\d+\.json", name)
        if m:
            with open(path) as f:
                lat[m.group(1)].append(json.load(f))
            continue
        m = re.fullmatch(r"cost-(\w+)-d(\d+)-r(\d+)\.json", name)
        if m:
            with open(path) as f:
                r = json.load(f)
            above = open(path[: -len(".json")] + ".above").read().strip()
            ws = r["workloads"]
            walks = [w for w in ws if w["workload"] == "walk"]
            reads = [w for w in ws if w["workload"] == "read"]
            warm = reads[1:]
            cost[(m.group(1), int(m.group(2)))].append(
                {
                    "run": int(m.group(3)),
                    "walk_ms": 1e3 * sum(w["backend_cpu_s"] for w in walks) / len(walks),
                    "walk_ops_s": med([w["ops_per_s"] for w in walks]),
                    "cold_s_gb": reads[0]["backend_cpu_s"] / (reads[0]["bytes"] / 1e9),
                    "warm_s_gb": sum(w["backend_cpu_s"] for w in warm) / (sum(w["bytes"] for w in warm) / 1e9),
                    "warm_mb_s": med([w["mb_per_s"] for w in warm]),
                    "above_s": int(above) / os.sysconf("SC_CLK_TCK"),
                }
            )
    return mem, lat, cost


IMAGES = "N images"


def memory_tables(mem, count, out):
    ns = sorted({n for (_, n) in mem})
    have_read = any(r["read_rss"] is not None for rs in mem.values() for r in rs)
    nruns = max(len(v) for v in mem.values())
    out.append(f"### 1. Daemon memory with 1, 16 and {count} images mounted\n")
    out.append(
        f"{IMAGES} mounted at /rafs/cI/lowerdir (blobs on tmpfs, chunks shared between the "
        "images, so chunk and blob caches are shared across mounts in both daemons). RSS = VmRSS "
        "of the serving process right after the front end's workload (depth 16) over the whole "
        "served tree, i.e. all N mounts; ours is the sandboxed grandchild (supervisor -> waiter "
        f"-> daemon). Medians of {nruns} runs, MiB; ratio = nydusd / ours (above 1: ours smaller).\n"
    )

    def rows(key, label):
        lines = []
        for n in ns:
            o = med([r[key] for r in mem.get(("ours", n), [])])
            t = med([r[key] for r in mem.get(("nydusd", n), [])])
            lines.append((f"{label}, {n} mount{'s' if n > 1 else ''}", o, t))
        o1, o64 = med([r[key] for r in mem[("ours", ns[0])]]), med([r[key] for r in mem[("ours", ns[-1])]])
        t1, t64 = med([r[key] for r in mem[("nydusd", ns[0])]]), med([r[key] for r in mem[("nydusd", ns[-1])]])
        if None not in (o1, o64, t1, t64) and ns[-1] > ns[0]:
            d = ns[-1] - ns[0]
            lines.append((f"{label}: per extra mount, ({label}@{ns[-1]} - @{ns[0]}) / {d}", (o64 - o1) / d, (t64 - t1) / d))
        return lines

    def table(title, lines, spec=".1f"):
        out.append(f"| {title} | ours | nydusd | nydusd/ours |")
        out.append("|---|---:|---:|---:|")
        for label, o, t in lines:
            out.append(f"| {label} | {fmt(o, spec)} | {fmt(t, spec)} | {fmt(ratio(t, o), '.2f')} |")
        out.append("")

    table("after a walk of every mount", rows("walk_rss", "RSS") + rows("walk_anon", "anonymous RSS"), ".2f")
    if have_read:
        nbytes = med([r["read_bytes"] for r in mem[("ours", ns[-1])]])
        out.append(
            f"After the walk, a whole-tree read of every mount ({nbytes / 1e9:.1f} GB at {ns[-1]} mounts), "
            "then: RSS, peak RSS over the session (VmHWM), and beside RSS the largest verified chunk "
            "store ours held (an unnamed file in /var/tmp: page cache, outside RSS) and nydusd's "
            "blobcache work_dir (tmpfs, outside RSS), all taken while the front end's session "
            "is still up (both daemons end with it).\n"
        )
        table(
            "after walk + whole-tree read of every mount",
            rows("read_rss", "RSS") + rows("read_anon", "anonymous RSS") + rows("peak", "peak RSS")
            + rows("cache", "chunk store / blobcache"),
            ".2f",
        )
    else:
        table("peak RSS and caches (walk only)", rows("peak", "peak RSS") + rows("cache", "chunk store / blobcache"), ".2f")
    out.append("| threads of the serving process | ours | nydusd |")
    out.append("|---|---:|---:|")
    for n in ns:
        o = med([r["threads"] for r in mem.get(("ours", n), [])])
        t = med([r["threads"] for r in mem.get(("nydusd", n), [])])
        out.append(f"| {n} mounts | {fmt(o, '.0f')} | {fmt(t, '.0f')} |")
    out.append("")


def mount_cpu(mem):
    """Median CPU ms per mount (all the daemon's processes) at the largest N: (ours, nydusd)."""
    n = max(n for (_, n) in mem)
    return tuple(
        med([1e3 * r["mount_cpu_s"] / n for r in mem.get((c, n), [])]) for c in ("ours", "nydusd")
    ) + (n,)


def latency_table(lat, count, first_read, out, mem):
    nruns = max(len(v) for v in lat.values())
    out.append(f"### 2. Mount latency and the first read of a new mount ({count} mounts)\n")
    out.append(
        "A front end is connected (FUSE INIT done) before the first mount; then per mount: POST "
        "(a new API connection each, as Kata), and once the 204 is in, the front end looks up "
        f"every component of /rafs/cI/lowerdir/{first_read}, opens it, reads it whole and "
        "releases it (content checked by sha256). \"first read\" runs from the POST's start to "
        "that file's last byte. Then the mounts are DELETEd one by one. Per run: p50 and p99 "
        f"over the {count} mounts (p99 of {count} is the second largest); medians of {nruns} runs, "
        f"ms; ratio = nydusd / ours (above 1: ours faster). {IMAGES}: mount 1 finds cold "
        f"caches, mounts 2-{count} the chunks they share cached.\n"
    )
    out.append("| ms | ours | nydusd | nydusd/ours |")
    out.append("|---|---:|---:|---:|")

    def row(label, key, f):
        o = med([f(r[key]) for r in lat.get("ours", [])])
        t = med([f(r[key]) for r in lat.get("nydusd", [])])
        out.append(f"| {label} | {fmt(o, '.2f')} | {fmt(t, '.2f')} | {fmt(ratio(t, o), '.2f')} |")
        return o, t

    res = {}
    res["post50"] = row("POST -> 204, p50", "post_ms", lambda v: pct(sorted(v), 0.5))
    res["post99"] = row("POST -> 204, p99", "post_ms", lambda v: pct(sorted(v), 0.99))
    res["first50"] = row("POST -> first file read, p50", "first_read_ms", lambda v: pct(sorted(v), 0.5))
    res["first99"] = row("POST -> first file read, p99", "first_read_ms", lambda v: pct(sorted(v), 0.99))
    res["cold"] = row("POST -> first file read, mount 1 (cold)", "first_read_ms", lambda v: v[0])
    row("front end's lookup + read alone, p50", "read_us", lambda v: pct(sorted(v), 0.5) / 1e3)
    if mem:
        o, t, n = mount_cpu(mem)
        res["cpu"] = (o, t)
        out.append(
            f"| CPU per mount, ms: run time (schedstat) of every thread of the daemon's processes "
            f"over the {n} POSTs of section 1, divided by {n} (load-independent, unlike the rest) | {fmt(o, '.2f')} | {fmt(t, '.2f')} | {fmt(ratio(t, o), '.2f')} |"
        )
    row("DELETE -> 204, p50", "delete_ms", lambda v: pct(sorted(v), 0.5))
    row("DELETE -> 204, p99", "delete_ms", lambda v: pct(sorted(v), 0.99))
    out.append("")
    return res


def cost_tables(cost, walks, out):
    depths = sorted({d for (_, d) in cost}, reverse=True)
    nruns = max(len(v) for v in cost.values())
    out.append("### 3. The table's own cost: one image through the table vs single-image mode\n")
    out.append(
        "The same image served by `--socket-path S --image OCI:TAG` (single) and by `virtiofs "
        "--apisock A --sock S` with the image POSTed at /img (table), both `--cache always`, "
        "default sandbox. Per session (a fresh daemon): "
        f"{walks} walks at depth 16 ({(int(walks) + 4) // 5} at depth 1), then whole-tree reads: "
        "the first cold (chunk store empty), then 8 warm ones at depth 16 (4 at depth 1), so that "
        "each figure sums about 0.5 s of 10 ms CPU ticks. CPU = utime+stime of the serving "
        "process, ms per walk and s per GB read. "
        f"Medians of {nruns} paired runs (single and table back to back in each, which goes first "
        "alternating); table/single is the median of the per-run ratios, with their range; "
        "spread = (max - min) / median over the runs; \"within noise\" when the per-run ratios "
        "fall on both sides of 1 or the median ratio is off 1 by no more than the single-image "
        "figures' own spread; with the number of runs in which the table's figure was the higher.\n"
    )
    res = {}
    for d in depths:
        out.append(f"| depth {d} | single | table | table/single | per-run range | spread single | spread table | within noise |")
        out.append("|---|---:|---:|---:|---|---:|---:|---|")
        for key, label, spec in [
            ("walk_ms", "walk, CPU ms per walk", ".1f"),
            ("cold_s_gb", "cold read, CPU s/GB", ".3f"),
            ("warm_s_gb", "warm read, CPU s/GB", ".3f"),
            ("walk_ops_s", "walk, ops/s (wall clock)", ".0f"),
            ("warm_mb_s", "warm read, MB/s (wall clock)", ".0f"),
        ]:
            runs_s = {r["run"]: r[key] for r in cost.get(("single", d), [])}
            runs_t = {r["run"]: r[key] for r in cost.get(("table", d), [])}
            s, t = list(runs_s.values()), list(runs_t.values())
            pairs = [runs_t[k] / runs_s[k] for k in runs_s if k in runs_t and runs_s[k]]
            ms, mt, r = med(s), med(t), med(pairs)
            more = sum(p > 1 for p in pairs)
            if len(pairs) < 2:
                within = "-"
            elif min(pairs) <= 1 <= max(pairs) or abs(r - 1) <= spread(s):
                within = f"yes (table higher in {more} of {len(pairs)})"
            else:
                within = f"no (table higher in {more} of {len(pairs)})"
            rng = f"{min(pairs):.3f}-{max(pairs):.3f}" if pairs else "-"
            out.append(
                f"| {label} | {fmt(ms, spec)} | {fmt(mt, spec)} | {fmt(r, '.3f')} | {rng} | "
                f"{spread(s) * 100:.1f}% | {spread(t) * 100:.1f}% | {within} |"
            )
            res[(d, key)] = (ms, mt, r, within)
        above = med([r["above_s"] for r in cost.get(("table", d), [])])
        above_s = med([r["above_s"] for r in cost.get(("single", d), [])])
        out.append(
            f"\nCPU of the processes above the serving one (supervisor, waiter) during these "
            f"workloads: single {fmt(above_s, '.2f')} s, table {fmt(above, '.2f')} s.\n"
        )
    return res


def main():
    out_dir, tree_bytes, count, walks, first_read = sys.argv[1:6]
    global IMAGES
    if os.environ.get("DISTINCT", "1") == "1":
        IMAGES = (
            "N different images of bookworm minbase (one file, /etc/pfs-instance, differs; "
            "metadata of their own)"
        )
    else:
        IMAGES = "The same bookworm minbase image mounted N times"
    mem, lat, cost = load(out_dir)
    out = []
    out.append(f"Tree: bookworm minbase, {int(tree_bytes) / 2**20:.0f} MiB.\n")
    if mem:
        memory_tables(mem, count, out)
    lres = latency_table(lat, count, first_read, out, mem) if lat else {}
    cres = cost_tables(cost, walks, out) if cost else {}
    if not os.environ.get("SUMMARY"):
        print("\n".join(out).rstrip())
        ratios = []
        ns = sorted({n for (_, n) in mem})
        if mem:
            o = [med([r["walk_rss"] for r in mem[("ours", n)]]) for n in (ns[0], ns[-1])]
            t = [med([r["walk_rss"] for r in mem[("nydusd", n)]]) for n in (ns[0], ns[-1])]
            ratios.append((f"mount table: RSS after walk, {ns[-1]} mounts", "nydusd", ratio(t[1], o[1]), None))
            ratios.append(("mount table: RSS per extra mount", "nydusd", ratio(t[1] - t[0], o[1] - o[0]), None))
        if lres:
            ratios.append(("mount table: POST -> 204, p50", "nydusd", ratio(lres["post50"][1], lres["post50"][0]), None))
            ratios.append(("mount table: POST -> first read, p50", "nydusd", ratio(lres["first50"][1], lres["first50"][0]), None))
        for d in sorted({d for (d, _) in cres}, reverse=True):
            for key, label in [("walk_ms", "walk CPU"), ("warm_s_gb", "warm read CPU")]:
                ms, mt, r, _ = cres[(d, key)]
                ratios.append((f"mount table: {label}, d={d}", "single image", ratio(ms, mt), 1.0))
        path = os.environ.get("BENCH_RATIOS")
        if path:
            with open(path, "a") as f:
                for metric, peer, r, target in ratios:
                    if r:
                        f.write(f"{metric}\t{peer}\t{r:.3f}\t{'' if target is None else target}\n")
        return
    # The summary.
    print("bench-mounts summary (medians; ratio = peer / ours, above 1: ours better)")
    if mem:
        ns = sorted({n for (_, n) in mem})
        for n in ns:
            o = med([r["walk_rss"] for r in mem[("ours", n)]])
            t = med([r["walk_rss"] for r in mem[("nydusd", n)]])
            print(f"  RSS after walk, {n:>2} mounts: ours {o:.1f} MiB, nydusd {t:.1f} MiB ({fmt(ratio(t, o), '.2f')}x)")
        o = [med([r["walk_rss"] for r in mem[("ours", n)]]) for n in (ns[0], ns[-1])]
        t = [med([r["walk_rss"] for r in mem[("nydusd", n)]]) for n in (ns[0], ns[-1])]
        d = ns[-1] - ns[0]
        print(f"  RSS per extra mount: ours {(o[1] - o[0]) / d * 1024:.0f} KiB, nydusd {(t[1] - t[0]) / d * 1024:.0f} KiB")
    if lres:
        for key, label in [("post50", "POST p50"), ("post99", "POST p99"), ("first50", "first read p50"), ("first99", "first read p99"), ("cold", "first read, mount 1")]:
            o, t = lres[key]
            print(f"  {label}: ours {o:.2f} ms, nydusd {t:.2f} ms ({fmt(ratio(t, o), '.2f')}x)")
        if "cpu" in lres:
            o, t = lres["cpu"]
            print(f"  CPU per mount: ours {fmt(o, '.2f')} ms, nydusd {fmt(t, '.2f')} ms ({fmt(ratio(t, o), '.2f')}x)")
    for (d, key), (ms, mt, r, within) in sorted(cres.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        if key in ("walk_ms", "cold_s_gb", "warm_s_gb"):
            print(f"  table/single, depth {d}, {key}: {fmt(ms, '.3f')} vs {fmt(mt, '.3f')} = {fmt(r, '.3f')} (within noise: {within})")


if __name__ == "__main__":
    main()
