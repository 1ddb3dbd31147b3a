#!/usr/bin/env python3
"""Draws the benchmark ratios as an SVG bar chart.

Input (stdin): tab-separated lines `metric<TAB>peer<TAB>ratio[<TAB>target]`, where ratio is how
many times better we are than that peer (above 1: we win) and target, if given, is the ratio an
issue asks for. Output (stdout): a horizontal bar chart on a log scale, one bar per line.
"""
import math
import sys
from xml.sax.saxutils import escape

ROW = 26
LABEL_W = 430
BAR_W = 420
PAD = 12


def x_of(ratio, lo, hi):
    return LABEL_W + BAR_W * (math.log(ratio) - math.log(lo)) / (math.log(hi) - math.log(lo))


def main():
    rows = []
    for line in sys.stdin:
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 3 or not parts[2]:
            continue
        ratio = float(parts[2])
        target = float(parts[3]) if len(parts) > 3 and parts[3] else None
        if ratio > 0:
            rows.append((parts[0], parts[1], ratio, target))
    if not rows:
        sys.exit("bench-chart.py: no rows on stdin")
    values = [r[2] for r in rows] + [r[3] for r in rows if r[3]]
    lo = min(0.5, min(values) / 1.2)
    hi = max(2.0, max(values) * 1.2)
    height = PAD * 2 + ROW * (len(rows) + 1)
    width = LABEL_W + BAR_W + 70
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{PAD}" y="{PAD + 12}" font-weight="bold">'
        "times better than the peer (log scale; right of 1 = we win; | = target)</text>",
    ]
    one = x_of(1.0, lo, hi)
    for i, (metric, peer, ratio, target) in enumerate(rows):
        y = PAD + ROW * (i + 1)
        x = x_of(ratio, lo, hi)
        colour = "#2a7" if ratio >= (target or 1.0) else ("#e90" if ratio >= 1.0 else "#c33")
        label = escape(f"{metric} vs {peer}")
        out.append(f'<text x="{PAD}" y="{y + 16}">{label}</text>')
        left, right = sorted((one, x))
        out.append(
            f'<rect x="{left:.1f}" y="{y + 4}" width="{max(right - left, 1):.1f}" '
            f'height="{ROW - 8}" fill="{colour}"/>'
        )
        out.append(f'<text x="{max(x, one) + 4:.1f}" y="{y + 16}">{ratio:.2f}x</text>')
        if target:
            tx = x_of(target, lo, hi)
            out.append(
                f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{y + 1}" y2="{y + ROW - 1}" '
                'stroke="black" stroke-width="2"/>'
            )
    out.append(
        f'<line x1="{one:.1f}" x2="{one:.1f}" y1="{PAD + ROW}" y2="{height - PAD}" '
        'stroke="#555" stroke-dasharray="3,3"/>'
    )
    out.append("</svg>")
    print("\n".join(out))


if __name__ == "__main__":
    main()
