"""Compare finished searches: did the controller learn, and did it find better architectures?

For each experiment folder: the strategy, the number of searched architectures, the best and the
top-5 mean reward (unique architectures), the mean reward of the first and the last quarter of
the search, and the trend of the batch mean reward over the controller's updates
(controller.jsonl; Spearman rho and p). Prints a markdown table, writes JSON and a PNG with, per
search, every reward in evaluation order, the batch means and the best so far.

    python scripts/compare_searches.py runs/study-reinforce runs/study-random --out runs/study
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from nassearch.controller_log import CONTROLLER_LOG, read_controller_log, reward_trend
from nassearch.records import RECORD_FILE, read_records


def summarise(exp: Path) -> dict[str, Any]:
    config = yaml.safe_load((exp / "config.yaml").read_text())
    records = [r for r in read_records(exp / RECORD_FILE) if not r.baseline]
    rewards = [r.reward if r.reward is not None else float("nan") for r in records]
    best_per_key: dict[str, float] = {}
    for r, reward in zip(records, rewards, strict=True):
        best_per_key[r.key] = max(best_per_key.get(r.key, -np.inf), reward)
    top = sorted(best_per_key.values(), reverse=True)
    updates = read_controller_log(exp / CONTROLLER_LOG)
    trend = reward_trend([u["batch_reward_mean"] for u in updates])
    # Losses have a heavy lower tail (a few diverged trainings at -20 to -30), which dominates a
    # batch mean; the median of each batch of 8 in evaluation order is the robust view.
    medians = [float(np.nanmedian(rewards[i : i + 8])) for i in range(0, len(rewards) - 7, 8)]
    median_trend = reward_trend(medians)
    quarter = max(1, len(rewards) // 4)
    baselines = {r.name: r.reward for r in read_records(exp / RECORD_FILE) if r.baseline}
    return {
        "experiment": str(exp),
        "strategy": config["search"]["controller"],
        "seed": config["seed"],
        "architectures": len(records),
        "unique": len(best_per_key),
        "best": top[0] if top else None,
        "top5_mean": float(np.mean(top[:5])) if top else None,
        "first_quarter_mean": float(np.nanmean(rewards[:quarter])),
        "last_quarter_mean": float(np.nanmean(rewards[-quarter:])),
        "updates": trend.updates,
        "rho": trend.rho,
        "p_value": trend.p_value,
        "median_rho": median_trend.rho,
        "median_p_value": median_trend.p_value,
        "batch_medians": medians,
        "baselines": baselines,
        "rewards": rewards,
        "batch_means": [u["batch_reward_mean"] for u in updates],
        "batch_told": [u["told"] for u in updates],
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| strategy | architectures (unique) | best | top-5 mean | first / last quarter mean | "
        "trend of batch means over updates (Spearman rho, p) | trend of medians per 8 (rho, p) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['strategy']} | {r['architectures']} ({r['unique']}) | {r['best']:.4f} | "
            f"{r['top5_mean']:.4f} | {r['first_quarter_mean']:.4f} / {r['last_quarter_mean']:.4f} "
            f"| {r['rho']:+.2f}, p {r['p_value']:.2g} ({r['updates']} updates) "
            f"| {r['median_rho']:+.2f}, p {r['median_p_value']:.2g} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, r in enumerate(rows):
        color = f"C{i}"
        x = np.arange(1, len(r["rewards"]) + 1)
        ax.scatter(x, r["rewards"], s=6, color=color, alpha=0.35)
        ax.plot(
            r["batch_told"],
            r["batch_means"],
            color=color,
            lw=1.5,
            label=f"{r['strategy']}: batch mean",
        )
        ax.plot(
            8 * np.arange(1, len(r["batch_medians"]) + 1),
            r["batch_medians"],
            color=color,
            lw=1.2,
            ls="-.",
            label=f"{r['strategy']}: median per 8",
        )
        ax.plot(
            x,
            np.fmax.accumulate(r["rewards"]),
            color=color,
            lw=1,
            ls="--",
            label=f"{r['strategy']}: best so far",
        )
    for name, value in rows[0]["baselines"].items():
        if value is not None:
            ax.axhline(value, color="k", lw=0.8, ls=":", label=f"{name} baseline")
    # A few diverged trainings sit far below the rest; show the bulk, and say what is off-scale.
    everything = np.concatenate([np.asarray(r["rewards"], float) for r in rows])
    everything = everything[np.isfinite(everything)]
    low, high = np.percentile(everything, 5), everything.max()
    bottom = low - 0.1 * (high - low)
    ax.set_ylim(bottom, high + 0.05 * (high - low))
    hidden = int((everything < bottom).sum())
    if hidden:
        ax.text(
            0.01,
            0.01,
            f"{hidden} rewards below {bottom:.3g} off the scale",
            transform=ax.transAxes,
            fontsize=7,
        )
    ax.set_xlabel("architectures evaluated")
    ax.set_ylabel("reward")
    ax.set_title("searches on the same proxy: rewards in evaluation order", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    args = parser.parse_args()
    for exp in args.experiments:
        if not (exp / RECORD_FILE).is_file():
            parser.error(f"{exp}: no {RECORD_FILE} (not an experiment folder)")
    rows = [summarise(exp) for exp in args.experiments]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare.json").write_text(json.dumps(rows, indent=1))
    plot(rows, args.out / "compare.png")
    print(table(rows))
    print(f"\nwrote {args.out / 'compare.json'} and {args.out / 'compare.png'}")


if __name__ == "__main__":
    main()
