"""Benchmark search strategies on the surrogate reward: best-found reward vs number of samples.

For every space, strategy, seed and noise level, a controller searches the seeded surrogate
landscape (`nassearch.controllers.surrogate.SurrogateReward`, optimum 1.0) for `--samples`
results. The driver imitates `--parallel` workers: it asks for that many candidates, then tells
all their rewards (a synchronous REINFORCE batch of 8 fits exactly). Controllers are told the
(possibly noisy) reward; the curve records the best NOISE-FREE reward found so far. Every
candidate told counts as a sample, also deduplicated ones (their cached reward is the first
observation, as in a real search). Seed s uses landscape s, controller seed s and noise stream s.

Writes JSON (all curves) and a PNG (median curves, quartile bands), and prints the median number
of samples needed to reach 95% / 99% of the optimum ("not reached" when the median run does not
get there within the budget; "(k/n)": how many of the n seeds got there).

    python scripts/bench_controller.py --samples 1000 --seeds 10 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

STRATEGIES = ("reinforce", "ppo", "random", "evolution")
# Defaults learn too slowly for a 1,000-sample budget (lr 3.5e-4 suits ENAS's tens of
# thousands of samples); these were picked by a small sweep on the NAS-FPN surrogate.
HPARAMS: dict[str, dict[str, Any]] = {
    "reinforce": {
        "reward_shaping": "rank",
        "lr": 1e-2,
        "tanh_constant": 2.5,
        "entropy_weight": 1e-3,
        "batch_size": 8,
    },
    "ppo": {"reward_shaping": "rank", "lr": 3e-3, "batch_size": 8},
    "random": {},
    "evolution": {"population_size": 20, "sample_size": 5},
}
THRESHOLDS = (0.90, 0.95, 0.99)


def make_space(name: str, part: str):
    from nassearch.search_spaces import get_space

    return get_space(name, part=part) if name == "nasfcos" else get_space(name)


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """One search: returns the best-so-far clean reward after every sample."""
    import torch

    from nassearch.controllers import build_controller
    from nassearch.controllers.surrogate import SurrogateReward

    torch.set_num_threads(1)
    space = make_space(job["space"], job["part"])
    surrogate = SurrogateReward(space, seed=job["seed"], noise_std=job["noise"], validate=False)
    ctrl = build_controller(job["strategy"], space, seed=job["seed"], **job["hparams"])
    noise_rng = np.random.default_rng([job["seed"], 1])
    best, curve = -np.inf, []
    start = time.perf_counter()
    while len(curve) < job["samples"]:
        cands = ctrl.ask(min(job["parallel"], job["samples"] - len(curve)))
        if not cands:
            raise RuntimeError(f"{job['strategy']} asked for nothing with no result pending")
        for cand in cands:
            clean = surrogate.clean(cand.actions)
            told = cand.cached_reward
            if told is None:
                told = surrogate.reward(cand.actions, noise_rng)
            ctrl.tell(cand, told)
            best = max(best, clean)
            curve.append(best)
    return {**job, "curve": curve, "seconds": time.perf_counter() - start}


def samples_to(curve: np.ndarray, threshold: float) -> float:
    hit = np.flatnonzero(curve >= threshold - 1e-12)
    return float(hit[0] + 1) if len(hit) else float("inf")


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (space, noise, strategy): median/quartile curves and median samples to thresholds."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["space_label"], r["noise"], r["strategy"]), []).append(r)
    rows = []
    for (space, noise, strategy), runs in groups.items():
        curves = np.array([r["curve"] for r in runs])
        row = {
            "space": space,
            "noise": noise,
            "strategy": strategy,
            "seeds": len(runs),
            "median": np.median(curves, 0).tolist(),
            "q25": np.quantile(curves, 0.25, axis=0).tolist(),
            "q75": np.quantile(curves, 0.75, axis=0).tolist(),
            "final_best_median": float(np.median(curves[:, -1])),
            "seconds_per_run": float(np.mean([r["seconds"] for r in runs])),
        }
        for t in THRESHOLDS:
            hits = [samples_to(c, t) for c in curves]
            med = float(np.median(hits))  # inf when more than half never get there
            row[f"samples_to_{int(t * 100)}"] = None if not np.isfinite(med) else med
            row[f"reached_{int(t * 100)}"] = int(np.isfinite(hits).sum())
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    def fmt(v: float | None) -> str:
        return "not reached" if v is None else f"{v:.0f}"

    cols = "".join(f" {f'to {int(t * 100)}%':>18}" for t in THRESHOLDS)
    head = f"{'space':<14} {'noise':>5} {'strategy':<10}{cols} {'best@end':>9} {'s/run':>6}"
    print(head)
    print("-" * len(head))
    for r in sorted(rows, key=lambda r: (r["space"], r["noise"], STRATEGIES.index(r["strategy"]))):
        cells = ""
        for t in THRESHOLDS:
            p = int(t * 100)
            cell = f"{fmt(r[f'samples_to_{p}'])} ({r[f'reached_{p}']}/{r['seeds']})"
            cells += f" {cell:>18}"
        print(
            f"{r['space']:<14} {r['noise']:>5.2f} {r['strategy']:<10}{cells} "
            f"{r['final_best_median']:>9.3f} {r['seconds_per_run']:>6.1f}"
        )


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spaces = sorted({r["space"] for r in rows})
    noises = sorted({r["noise"] for r in rows})
    fig, axes = plt.subplots(
        len(spaces), len(noises), figsize=(5.5 * len(noises), 4 * len(spaces)), squeeze=False
    )
    colors = dict(zip(STRATEGIES, ("C0", "C1", "C7", "C2"), strict=True))
    for r in rows:
        ax = axes[spaces.index(r["space"])][noises.index(r["noise"])]
        x = np.arange(1, len(r["median"]) + 1)
        c = colors[r["strategy"]]
        ax.plot(x, r["median"], color=c, label=f"{r['strategy']} ({r['seeds']} seeds)")
        ax.fill_between(x, r["q25"], r["q75"], color=c, alpha=0.2, linewidth=0)
    for i, space in enumerate(spaces):
        for j, noise in enumerate(noises):
            ax = axes[i][j]
            ax.set_title(f"{space}, reward noise std {noise:g}")
            ax.set_xscale("log")
            ax.set_xlabel("samples")
            ax.set_ylabel("best noise-free reward (optimum 1)")
            for t in THRESHOLDS:
                ax.axhline(t, color="k", lw=0.5, ls=":")
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--spaces", default="nasfpn,nasfcos", help="comma list: nasfpn, nasfcos")
    parser.add_argument("--part", default="both", choices=("both", "fpn"), help="NAS-FCOS part")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--noise", type=float, default=0.02, help="noise std of the noisy runs")
    parser.add_argument("--parallel", type=int, default=8, help="candidates asked per round")
    parser.add_argument("--hparams", default="{}", help='JSON {"reinforce": {"lr": 0.01}, ...}')
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out-json", type=Path, default=Path("runs/bench_controller.json"))
    parser.add_argument("--out-png", type=Path, default=Path("runs/bench_controller.png"))
    parser.add_argument(
        "--from-json", type=Path, help="re-summarise and re-plot a previous --out-json, no runs"
    )
    args = parser.parse_args(argv)
    if args.from_json:
        results = json.loads(args.from_json.read_text())["runs"]
        rows = summarise(results)
        plot(rows, args.out_png)
        print_table(rows)
        return

    strategies = [s for s in args.strategies.split(",") if s]
    for s in strategies:
        if s not in STRATEGIES:
            parser.error(f"unknown strategy {s!r} (expected {', '.join(STRATEGIES)})")
    overrides = json.loads(args.hparams)
    hparams = {s: {**HPARAMS[s], **overrides.get(s, {})} for s in strategies}
    jobs = []
    for space in [s for s in args.spaces.split(",") if s]:
        label = f"nasfcos-{args.part}" if space == "nasfcos" else space
        for noise in sorted({0.0, args.noise}):
            for strategy in strategies:
                for seed in range(args.seeds):
                    jobs.append(
                        {
                            "space": space,
                            "part": args.part,
                            "space_label": label,
                            "noise": noise,
                            "strategy": strategy,
                            "seed": seed,
                            "samples": args.samples,
                            "parallel": args.parallel,
                            "hparams": hparams[strategy],
                        }
                    )
    # Slow (policy-gradient) jobs first so the pool's tail is short.
    jobs.sort(key=lambda j: j["strategy"] in ("random", "evolution"))
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        results = list(pool.map(run_one, jobs))
    elapsed = time.perf_counter() - start
    rows = summarise(results)
    args.out_json.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in vars(args).items() if not k.startswith("out")}
    meta.update(hparams=hparams, wall_seconds=elapsed)
    args.out_json.write_text(json.dumps({"meta": meta, "summary": rows, "runs": results}))
    plot(rows, args.out_png)
    print_table(rows)
    print(f"\n{len(jobs)} runs in {elapsed:.0f} s with {args.workers} workers")
    print(f"wrote {args.out_json} and {args.out_png}")


if __name__ == "__main__":
    main()
