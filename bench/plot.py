"""docs/lag.png: detection lag against flush duration, ours and the SDK at both settings."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def lag_plot(lag_data: dict[str, Any], out: Path, title: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, durations = lag_data["rows"], lag_data["durations"]
    fig, ax = plt.subplots(figsize=(8, 5.2), dpi=110)
    styles = {"ours": ("redisflush", "tab:blue", "o"),
              "ours_pc": ("redisflush, ARM giving percentComplete", "tab:green", "D"),
              "sdk2": ("SDK polling_interval=2", "tab:orange", "s"),
              "sdk1": ("SDK polling_interval=1", "tab:purple", "v"),
              "sdk": ("SDK default (30 s)", "tab:red", "^")}
    lowest = 0.05
    for way, (label, color, marker) in styles.items():
        xs = [d for d in durations if f"{way}|{d:g}" in rows]
        med = [rows[f"{way}|{d:g}"]["median"] for d in xs]
        mx = [rows[f"{way}|{d:g}"]["max"] for d in xs]
        lowest = min([lowest] + [v for v in med if v > 0])
        ax.plot(xs, med, marker=marker, color=color, label=f"{label}: median")
        ax.plot(xs, mx, marker=marker, color=color, linestyle=":", alpha=0.7,
                label=f"{label}: max")
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle="-.")
    ax.text(durations[0], 1.07, "target max 1.0 s", color="grey", fontsize=8)
    ax.text(durations[0], 0.44, "target median 0.5 s", color="grey", fontsize=8,
            verticalalignment="top")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(10 ** math.floor(math.log10(lowest / 1.5)), 100)  # every point shows
    ax.set_xticks(durations)
    ax.set_xticklabels([f"{d:g}" for d in durations])
    ax.set_xlabel("flush duration (s)")
    ax.set_ylabel("event after the operation's end (s)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


if __name__ == "__main__":
    # python bench/plot.py DATA.json OUT.png: redraw from a kept run's data (run.py --keep)
    import json
    import sys

    doc = json.loads(Path(sys.argv[1]).read_text())
    lag = next(v for k, v in doc.items() if k.startswith("1."))
    lag_plot(lag, Path(sys.argv[2]), "Completion event after the operation's end (emulator, "
             "recorded ARM shape)")
