"""The end-to-end proof: search, export the top 3, retrain them and FPN with several seeds, compare.

    python scripts/end_to_end.py experiments/demo_cpu.yaml --out runs/demo --seeds 3 --epochs 24

1. `nassearch run CONFIG` (skipped when the experiment has finished; resumed when it stopped);
2. `nassearch export --top 3 --recipe search`;
3. every exported architecture and the search's first baseline (FPN), each under the same
   retrain recipe (the search's own settings with `--epochs` epochs; `--set` adds overrides)
   with `--seeds` seeds, evaluated on the validation split the search never saw;
4. a markdown table (AP and AP50 mean ± std over seeds, parameters and MACs at the training
   input, Welch's t-test of each against FPN) and a bar chart with error bars, in OUT.

Every training is its own run folder under OUT/retrain; finished ones are kept, so the script
can be run again after an interruption.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from nassearch.config import load_config
from nassearch.detectors.complexity import count_macs, count_parameters
from nassearch.export import export_top
from nassearch.records import RECORD_FILE, read_records
from nassearch.search import experiment_dir, run_search
from nassearch.train import build_model_and_data, run_train


def finished_search(exp: Path, total: int) -> bool:
    if not (exp / RECORD_FILE).is_file():
        return False
    return sum(1 for r in read_records(exp / RECORD_FILE) if not r.baseline) >= total


def train_runs(name: str, config: Path, overrides: list[str], seeds: list[int], out: Path):
    """Train `config` once per seed (finished runs are read back); returns metrics.json dicts."""
    results = []
    for seed in seeds:
        run = f"{name}-seed{seed}"
        cfg = load_config(
            config, [*overrides, f"seed={seed}", f"name={run}", f"output_dir={out / 'retrain'}"]
        )
        metrics = cfg.run_dir() / "metrics.json"
        if not metrics.is_file():
            resume = (cfg.run_dir() / "checkpoints" / "last.pth").is_file()
            print(f"training {run} ({'resumed' if resume else 'new'})", flush=True)
            run_train(cfg, resume=resume, log=lambda _line: None)
        results.append(json.loads(metrics.read_text()))
    return results, cfg


def cost(cfg) -> tuple[int, int]:
    """Parameters and multiply-adds per image at the training input, as trained."""
    model, _, _ = build_model_and_data(cfg)
    return count_parameters(model)["total"], count_macs(model, cfg.input.network_size())["total"]


def welch_p(a: list[float], b: list[float]) -> float:
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return float("nan")
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=float, default=24)
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    search_cfg = load_config(args.config, [f"output_dir={out}"])
    exp = experiment_dir(search_cfg)
    if not finished_search(exp, search_cfg.search.num_architectures):
        run_search(search_cfg, resume=exp.is_dir() and any(exp.iterdir()))
    exported = export_top(exp, args.top, recipe="search")
    overrides = [f"train.epochs={args.epochs}", "train.tensorboard=false", *args.overrides]
    seeds = list(range(args.seeds))
    baseline = search_cfg.search.baselines[0]
    rows = []
    for item in [*exported, None]:
        config = exported[0].retrain_path if item is None else item.retrain_path
        extra = [f"model.genotype={baseline}"] if item is None else []
        name = baseline if item is None else f"arch-{item.rank}"
        results, cfg = train_runs(name, config, overrides + extra, seeds, out)
        ap = [r["metrics"]["AP"] for r in results]
        ap50 = [r["metrics"]["AP50"] for r in results]
        params, macs = cost(cfg)
        rows.append(
            {
                "name": name,
                "key": None if item is None else item.key,
                "proxy_reward": None if item is None else item.reward,
                "ap": ap,
                "ap50": ap50,
                "params": params,
                "macs": macs,
                "seconds": statistics.fmean(r["seconds"] for r in results),
            }
        )
    fpn = rows[-1]
    lines = [
        f"| architecture | proxy reward | AP (mean ± std, {args.seeds} seeds) | AP50 | params | "
        "GMACs | Welch p vs FPN (AP) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sd = statistics.stdev if len(r["ap"]) > 1 else (lambda _v: 0.0)
        p = "—" if r is fpn else f"{welch_p(r['ap'], fpn['ap']):.2g}"
        reward = "—" if r["proxy_reward"] is None else f"{r['proxy_reward']:.4f}"
        lines.append(
            f"| {r['name']} | {reward} | {100 * statistics.fmean(r['ap']):.2f} ± "
            f"{100 * sd(r['ap']):.2f} | {100 * statistics.fmean(r['ap50']):.2f} ± "
            f"{100 * sd(r['ap50']):.2f} | {r['params']:,} | {r['macs'] / 1e9:.3f} | {p} |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    (out / "end_to_end.md").write_text(table)
    (out / "end_to_end.json").write_text(json.dumps(rows, indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    names = [r["name"] for r in rows]
    means = [100 * statistics.fmean(r["ap"]) for r in rows]
    errors = [100 * (statistics.stdev(r["ap"]) if len(r["ap"]) > 1 else 0.0) for r in rows]
    colors = ["tab:blue"] * (len(rows) - 1) + ["tab:gray"]
    ax.bar(names, means, yerr=errors, capsize=4, color=colors)
    for i, r in enumerate(rows):
        ax.scatter([i] * len(r["ap"]), [100 * v for v in r["ap"]], color="black", s=8, zorder=3)
    ax.set_ylabel(f"validation AP (mean ± std over {args.seeds} seeds)")
    ax.set_title(f"searched top-{args.top} vs {baseline}, {args.epochs:g} epochs", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "end_to_end.png")
    print(f"wrote {out / 'end_to_end.md'}, end_to_end.json and end_to_end.png")


if __name__ == "__main__":
    main()
