"""Which proxy ranks architectures best per CPU-second? A grid of proxy settings, measured.

The same architectures (FPN plus seeded samples of the search space) are scored under every
setting of the grid with several seeds each, and once under a reference recipe (the base
config's `longer` reference of `nassearch fidelity`, scored by AP or by --reference-metric).
Per setting: the median seconds of training per architecture and seed, the ICC of its seed
noise, and Kendall's tau (bootstrap 95% interval) and Spearman's rho between its seed-mean
reward and the reference. All runs go through
`run_score_jobs` as one Ray Tune job per setting and are kept in OUT/scores-*.jsonl, so an
interrupted grid resumes. Prints a markdown table, writes OUT/proxy_grid.json and
OUT/proxy_grid.png (tau against seconds per architecture).

    python scripts/proxy_grid.py experiments/quickstart.yaml --archs 8 --seeds 2 --out runs/grid \
        --setting "ap: " --setting "neg_loss: proxy.reward=neg_loss" \
        --setting "3 epochs: proxy.reward=neg_loss train.epochs=3 scores=reward,ap"

A setting is `LABEL: KEY=VALUE KEY=VALUE ...` (the `--set` overrides of that setting). One
training yields every score the proxy computes, so `scores=reward,ap,ap50` reports one row per
score of the same runs (rewards `ap`, `ap50` and `neg_loss` differ only after training; with
`proxy.reward=neg_loss` all three are computed). The default is `scores=reward`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
from pathlib import Path

import numpy as np

from nassearch.config import load_config
from nassearch.fidelity.stats import bootstrap_interval, kendall_tau, seed_noise, spearman_rho
from nassearch.fidelity.study import longer_reference, reference_value
from nassearch.proxy_eval.rescore import ScoreJob, run_score_jobs
from nassearch.search_spaces import get_space, named_genotypes

SCORES = ("reward", "ap", "ap50")


def parse_setting(text: str) -> tuple[str, list[str], list[str]]:
    """`LABEL: overrides... [scores=a,b]` -> (label, overrides, scores)."""
    label, _, rest = text.partition(":")
    overrides, scores = [], ["reward"]
    for token in rest.split():
        if token.startswith("scores="):
            scores = token.removeprefix("scores=").split(",")
            unknown = [s for s in scores if s not in SCORES]
            if unknown:
                raise SystemExit(f"error: --setting {text!r}: unknown score {unknown[0]!r}")
        else:
            overrides.append(token)
    return label.strip(), overrides, scores


def architectures(cfg, n: int, seed: int):
    """The search's first baseline, then distinct seeded samples of its space: `n` in all."""
    space = get_space(cfg.search.space, **cfg.search.space_options)
    found = {}
    if cfg.search.baselines:
        baseline = named_genotypes(cfg.search.space)[cfg.search.baselines[0]]
        found[baseline.key()] = baseline
    rng = np.random.default_rng(seed)
    while len(found) < n:
        g = space.sample(rng)
        found.setdefault(g.key(), g)
    return list(found.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("--setting", action="append", required=True)
    parser.add_argument(
        "--set",
        dest="base_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override of the base config (and so of the reference and every setting)",
    )
    parser.add_argument("--archs", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--reference-metric", default="ap", choices=("ap", "ap50", "reward"))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = load_config(args.config, args.base_overrides)
    genotypes = architectures(base, args.archs, base.seed)
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    resources = {"cpu": base.search.cpus_per_trial, "gpu": base.search.gpus_per_trial}

    def score(name: str, cfg, seeds: list[int]):
        jobs = [
            ScoreJob(f"{g.key()}-{seed}", g.key(), g.to_dict(), seed, name, f"{name} #{i}")
            for i, g in enumerate(genotypes)
            for seed in seeds
        ]
        return run_score_jobs(
            jobs,
            {name: cfg},
            out / f"scores-{name}.jsonl",
            storage=out,
            name=f"tune-{name}",
            resources=resources,
            max_concurrent=base.search.max_concurrent,
        )

    reference = score("reference", longer_reference(base), [base.seed])
    ref = {s.key: reference_value(s, args.reference_metric) for s in reference}
    rows = []
    for index, text in enumerate(args.setting):
        label, overrides, views = parse_setting(text)
        cfg = load_config(args.config, args.base_overrides + overrides)
        scores = score(f"setting{index}", cfg, [cfg.seed + j for j in range(args.seeds)])
        # The median: robust to the odd run slowed by other work on the machine.
        seconds = statistics.median(s.train_seconds or 0.0 for s in scores)
        for view in views:
            by_key: dict[str, list[float]] = {}
            for s in scores:
                value = reference_value(s, view)
                if value is not None:
                    by_key.setdefault(s.key, []).append(value)
            keys = [
                g.key() for g in genotypes if by_key.get(g.key()) and ref.get(g.key()) is not None
            ]
            try:
                icc = seed_noise([by_key[k] for k in keys]).icc
            except ValueError:
                icc = math.nan
            tau = bootstrap_interval(
                kendall_tau,
                [statistics.fmean(by_key[k]) for k in keys],
                [ref[k] for k in keys],
                rng=np.random.default_rng(0),
            )
            rho = spearman_rho([statistics.fmean(by_key[k]) for k in keys], [ref[k] for k in keys])
            name = cfg.proxy.reward if view == "reward" else view
            rows.append(
                {
                    "setting": f"{label}, {name}",
                    "overrides": overrides,
                    "score": name,
                    "seconds_per_arch": seconds,
                    "icc": icc,
                    "tau": tau.value,
                    "tau_low": tau.low,
                    "tau_high": tau.high,
                    "rho": rho,
                    "architectures": len(keys),
                    "failed": sum(1 for s in scores if not s.ok),
                    "per_architecture": {k: by_key[k] for k in keys},
                }
            )
    table = [
        f"| setting | s/arch | ICC | Kendall tau vs reference {args.reference_metric} (95% CI) "
        "| Spearman rho |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        tau = (
            "n/a"
            if not math.isfinite(r["tau"])
            else f"{r['tau']:+.2f} [{r['tau_low']:+.2f}, {r['tau_high']:+.2f}]"
        )
        table.append(
            f"| {r['setting']} | {r['seconds_per_arch']:.1f} | {r['icc']:.2f} | {tau} "
            f"| {r['rho']:+.2f} |"
        )
    ref_seconds = statistics.median(s.train_seconds or 0.0 for s in reference)
    table.append(
        f"\nReference: {len(ref)} architectures, one seed each, {ref_seconds:.1f} s of training "
        f"per architecture (median); s/arch is the median training seconds per architecture and seed."
    )
    print("\n".join(table))
    summary = {
        "config": args.config,
        "architectures": [g.key() for g in genotypes],
        "reference": ref,
        "reference_seconds_per_arch": ref_seconds,
        "seeds": args.seeds,
        "rows": rows,
    }
    (out / "proxy_grid.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out / "proxy_grid.md").write_text("\n".join(table) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5.0), dpi=120)
    settings = list(dict.fromkeys(r["setting"].rsplit(", ", 1)[0] for r in rows))
    markers = {"ap": "o", "ap50": "s", "neg_loss": "^"}
    colours = plt.get_cmap("tab10")
    for r in rows:
        if not math.isfinite(r["tau"]):
            continue
        label, score = r["setting"].rsplit(", ", 1)
        index = settings.index(label)
        shift = list(markers).index(score) - 1 if score in markers else 0
        ax.errorbar(
            r["seconds_per_arch"] * (1 + 0.02 * shift),
            r["tau"],
            yerr=[[r["tau"] - r["tau_low"]], [r["tau_high"] - r["tau"]]],
            fmt=markers.get(score, "D"),
            color=colours(index % 10),
            capsize=3,
            alpha=0.85,
        )
    handles = [
        plt.Line2D([], [], color=colours(i % 10), marker="o", linestyle="", label=label)
        for i, label in enumerate(settings)
    ] + [
        plt.Line2D([], [], color="grey", marker=m, linestyle="", label=f"reward {score}")
        for score, m in markers.items()
    ]
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_xscale("log")
    ax.set_xlabel("training seconds per architecture and seed (log scale)")
    ax.set_ylabel(f"Kendall tau vs reference {args.reference_metric}")
    ax.set_title(
        f"proxy grid: {len(genotypes)} architectures; tau of the mean of {args.seeds} seeds "
        "(95% bootstrap)",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "proxy_grid.png")
    print(f"wrote {out / 'proxy_grid.json'}, proxy_grid.md and proxy_grid.png")


if __name__ == "__main__":
    main()
