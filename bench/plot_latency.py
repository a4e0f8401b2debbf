"""Plot metric latency against table size from bench/read_side.py's results (one command):

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/plot_latency.py [bench/results/read_side.json] [-o bench/latency_vs_size.png]

Log-log: p50 and p99 of each metric at rest and while the 2M-row file is ingested, and the plain
GROUP BY recompute (the read path before the projection) at the same size, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", nargs="?", type=Path, default=BENCH / "results" / "read_side.json")
    parser.add_argument("-o", "--out", type=Path, default=BENCH / "latency_vs_size.png")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    data = json.loads(args.results.read_text())["results"]
    sizes = [r["size"] for r in data]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    styles = {"at_rest": "-", "loading": "--"}
    colours = {"/metrics/hires": "tab:blue", "/metrics/departments": "tab:green"}
    for phase, style in styles.items():
        for path, colour in colours.items():
            for q, marker in (("p50_ms", "o"), ("p99_ms", "^")):
                ys = [r[phase][path][q] for r in data]
                when = "at rest" if phase == "at_rest" else "while loading 2M"
                label = f"{path.rsplit('/', 1)[1]} {q[:3]} {when}"
                ax.plot(
                    sizes,
                    ys,
                    style,
                    marker=marker,
                    color=colour,
                    alpha=1.0 if q == "p99_ms" else 0.6,
                    label=label,
                )
    ax.plot(
        sizes,
        [r["group_by_ms"] for r in data],
        "-",
        marker="s",
        color="tab:red",
        linewidth=2,
        label="plain GROUP BY recompute (one request before the projection)",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("employees in hired_employees")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Metric latency vs table size (2-core machine; each size with its reference, same run)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
