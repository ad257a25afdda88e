"""`nassearch report EXPERIMENT_DIR`: one picture of a search, the kind that goes on a slide.

Four parts, from the experiment's own files (architectures.jsonl, controller.jsonl,
reevaluation.jsonl):

- the reward of every architecture in the order evaluated, the running best, the baselines as
  horizontal lines and the stages of a progressive search marked;
- the controller's batch mean (and best) reward per update;
- reward against cost (MACs, parameters or latency) with the Pareto front, baselines as stars;
- the three best architectures drawn as in the papers.

`report.png` and `report.md` (the figures in numbers) are written atomically.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np

from nassearch.atomic import atomic_write, atomic_write_text
from nassearch.controller_log import CONTROLLER_LOG, read_controller_log, reward_trend
from nassearch.export import Experiment, load_experiment, record_genotype
from nassearch.output_paths import check_output_folder
from nassearch.ranking import RankedArchitecture, rank_records
from nassearch.records import ArchitectureRecord
from nassearch.status import Status

Cost = Literal["macs", "params", "latency_ms"]
COST_FIELD = {"macs": "macs", "params": "params", "latency_ms": "latency_ms"}
COST_LABEL = {"macs": "GMACs per image", "params": "parameters (M)", "latency_ms": "latency (ms)"}
COST_SCALE = {"macs": 1e-9, "params": 1e-6, "latency_ms": 1.0}


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both (lower cost, higher reward), by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _cost(record: ArchitectureRecord, cost: Cost) -> float | None:
    value = getattr(record, COST_FIELD[cost])
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return None if value <= 0 else float(value) * COST_SCALE[cost]


def _show_bulk(ax, values: list[float]) -> None:
    """Diverged trainings can sit far below the rest (a loss of -70 beside -3): set the lower limit
    near the 5th percentile, and say how many points are off the scale."""
    values = [v for v in values if math.isfinite(v)]
    if len(values) < 20:
        return
    low, high = float(np.percentile(values, 5)), max(values)
    bottom = low - 0.1 * (high - low)
    hidden = sum(v < bottom for v in values)
    if hidden:
        ax.set_ylim(bottom, high + 0.05 * (high - low))
        ax.text(
            0.01,
            0.01,
            f"{hidden} below {bottom:.3g} off the scale",
            transform=ax.transAxes,
            fontsize=7,
        )


def _searched(exp: Experiment) -> list[ArchitectureRecord]:
    return [r for r in exp.records if not r.baseline]


def _baselines(exp: Experiment) -> list[ArchitectureRecord]:
    return [r for r in exp.records if r.baseline and r.successful]


def _reward_panel(ax, exp: Experiment) -> None:
    searched = _searched(exp)
    xs = [i for i, r in enumerate(searched, start=1) if r.successful]
    ys = [searched[i - 1].reward for i in xs]
    ax.scatter(xs, ys, s=10, color="tab:blue", alpha=0.6, label="architecture")
    running, best = [], -math.inf
    for y in ys:
        best = max(best, y)
        running.append(best)
    ax.step(xs, running, where="post", color="tab:red", label="running best")
    for record, color in zip(_baselines(exp), ("black", "tab:green", "tab:purple"), strict=False):
        name = record.name
        ax.axhline(record.reward, color=color, ls="--", lw=1, label=f"baseline {name}")
    _show_bulk(ax, ys)
    stages = [r.stage for r in searched]
    for i in range(1, len(stages)):
        if stages[i] != stages[i - 1]:
            ax.axvline(i + 0.5, color="gray", ls=":", lw=1)
            ax.text(i + 1, ax.get_ylim()[0], f" stage {stages[i]}", fontsize=7, va="bottom")
    stopped = sum(r.status == Status.STOPPED for r in searched)
    failed = len(searched) - len(xs) - stopped
    early = f", {stopped} stopped early" if stopped else ""
    ax.set_title(
        f"reward per architecture ({len(searched)} evaluated, {failed} failed{early})", fontsize=9
    )
    ax.set_xlabel("architectures evaluated")
    ax.set_ylabel(f"reward ({exp.config.proxy.reward})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def _controller_panel(ax, exp: Experiment) -> str:
    updates = read_controller_log(exp.path / CONTROLLER_LOG)
    if not updates:
        ax.text(0.5, 0.5, "no controller updates recorded", ha="center", va="center")
        ax.set_axis_off()
        return "no controller updates recorded"
    lines = []
    for stage in dict.fromkeys(u.get("stage") for u in updates):
        mine = [u for u in updates if u.get("stage") == stage]
        index = [u["update"] for u in mine]
        means = [u["batch_reward_mean"] for u in mine]
        label = "batch mean" if stage is None else f"batch mean ({stage})"
        ax.plot(index, means, marker="o", ms=3, label=label)
        ax.plot(index, [u["batch_reward_max"] for u in mine], ls=":", lw=1, label="batch best")
        lines.append(reward_trend(means).describe(exp.config.search.controller))
    ax.set_title(f"{exp.config.search.controller}: reward per update\n{lines[0]}", fontsize=8)
    ax.set_xlabel("controller update")
    ax.set_ylabel("reward")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return "; ".join(lines)


def _cost_panel(ax, exp: Experiment, cost: Cost) -> list[ArchitectureRecord]:
    ok = [r for r in _searched(exp) if r.successful and _cost(r, cost) is not None]
    points = [(_cost(r, cost), r.reward) for r in ok]
    ax.scatter(
        [p[0] for p in points], [p[1] for p in points], s=10, alpha=0.5, label="architecture"
    )
    front = pareto_front(points)
    ax.plot(
        [points[i][0] for i in front],
        [points[i][1] for i in front],
        color="tab:red",
        marker="o",
        ms=4,
        label=f"Pareto front ({len(front)})",
    )
    for record in _baselines(exp):
        value = _cost(record, cost)
        if value is not None:
            name = record.name
            ax.scatter([value], [record.reward], marker="*", s=120, color="black", zorder=3)
            ax.annotate(
                name,
                (value, record.reward),
                fontsize=7,
                xytext=(5, 3),
                textcoords="offset points",
            )
    _show_bulk(ax, [p[1] for p in points])
    ax.set_title(f"reward against cost ({COST_LABEL[cost]})", fontsize=9)
    ax.set_xlabel(COST_LABEL[cost])
    ax.set_ylabel("reward")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return [ok[i] for i in front]


def _architecture_panels(axes, exp: Experiment, best: list[RankedArchitecture]) -> None:
    import matplotlib.image as mpimg

    from nassearch.show import draw

    stacks = getattr(exp.config.searched_neck(), "stacks", 1)
    with tempfile.TemporaryDirectory(prefix="nassearch-report-") as tmp:
        for rank, (ax, arch) in enumerate(zip(axes, best, strict=False), start=1):
            genotype = record_genotype(exp, arch.record)
            image = Path(tmp) / f"arch-{rank}.png"
            draw(
                genotype,
                image,
                title=f"#{rank} {arch.key}  reward {arch.describe()}",
                stacks=stacks,
            )
            ax.imshow(mpimg.imread(image))
    for ax in axes:
        ax.set_axis_off()


def write_report(
    exp_dir: str | Path, *, out: str | Path | None = None, cost: Cost = "macs"
) -> tuple[Path, Path]:
    """Write report.png and report.md for an experiment folder; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nassearch.errors import NasSearchError

    if cost not in COST_FIELD:
        raise NasSearchError(f"--cost: {cost!r} (expected one of {', '.join(COST_FIELD)})")
    exp = load_experiment(exp_dir)
    ranked = rank_records(exp.records, exp.reevaluations)
    if not ranked:
        raise NasSearchError(f"{exp.records_path}: no successful searched architecture to report")
    out = check_output_folder(out if out is not None else exp.path)
    out.mkdir(parents=True, exist_ok=True)
    fig = plt.figure(figsize=(16, 9.5), dpi=100)
    grid = fig.add_gridspec(2, 3, height_ratios=[1, 1.15])
    _reward_panel(fig.add_subplot(grid[0, 0]), exp)
    trend = _controller_panel(fig.add_subplot(grid[0, 1]), exp)
    front = _cost_panel(fig.add_subplot(grid[0, 2]), exp, cost)
    _architecture_panels([fig.add_subplot(grid[1, i]) for i in range(3)], exp, ranked[:3])
    fig.suptitle(
        f"{exp.config.name}: {exp.config.search.controller} over {exp.config.search.space}",
        fontsize=12,
    )
    fig.tight_layout()
    png, md = out / "report.png", out / "report.md"
    atomic_write(png, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    atomic_write_text(md, _markdown(exp, ranked, front, trend, cost))
    return png, md


def _markdown(
    exp: Experiment,
    ranked: list[RankedArchitecture],
    front: list[ArchitectureRecord],
    trend: str,
    cost: Cost,
) -> str:
    searched = _searched(exp)
    ok = [r for r in searched if r.successful]
    lines = [
        f"# Search report: `{exp.config.name}`",
        "",
        f"{exp.config.search.controller} over {exp.config.search.space}; reward "
        f"`{exp.config.proxy.reward}`; {len(searched)} architectures evaluated, {len(ok)} "
        f"successful ({len(ranked)} unique). Learning: {trend}.",
        "",
        "![report](report.png)",
        "",
        "| | key | reward | params | GMACs |",
        "|---|---|---|---|---|",
    ]
    rows = [(f"#{i}", a.record, a.describe()) for i, a in enumerate(ranked[:5], start=1)]
    rows += [
        (
            f"baseline {r.name}",
            r,
            f"{r.reward:.4f}",
        )
        for r in _baselines(exp)
    ]
    for name, r, reward in rows:
        macs = r.macs or 0
        lines.append(f"| {name} | `{r.key}` | {reward} | {r.params or 0:,} | {macs / 1e9:.2f} |")
    lines += ["", f"Pareto front over {COST_LABEL[cost]} ({len(front)} architectures):", ""]
    lines += [
        f"- `{r.key}`: reward {r.reward:.4f}, {_cost(r, cost):.3g} {COST_LABEL[cost]}"
        for r in front
    ]
    return "\n".join(lines) + "\n"
