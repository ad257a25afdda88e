"""FIFO against ASHA: the same search (config, seed, controller, number of architectures) run
once with each `search.scheduler`, then each run's best architecture re-scored at the full budget
with more seeds (`search.reevaluate_top`), to see whether early stopping buys architectures per
hour without losing the best one.

    python scripts/compare_schedulers.py experiments/demo_cpu.yaml --archs 24 --seeds 3 \
        --out runs/schedulers [--set search.reduction_factor=3 ...]

Writes `schedulers-<asha-name>.json`, `.md` and `.png` into --out. Search seconds run
from the baseline's record (the Tuner starts right after it) to the last architecture's record,
so neither the baseline nor the re-scoring counts. The best architectures' difference is
compared with the least significant difference (two-sided t, 5%) of their re-scored means.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from scipy import stats

from nassearch.config import load_config
from nassearch.console import silent
from nassearch.jsonl import read_jsonl
from nassearch.records import RECORD_FILE, read_records
from nassearch.status import Status


@dataclass(frozen=True)
class SchedulerRun:
    scheduler: str
    architectures: int
    finished: int
    stopped: int
    failed: int
    search_seconds: float
    wall_seconds: float
    architectures_per_hour: float
    median_train_seconds: float
    epochs_trained: int
    best_key: str
    best_recorded: float
    best_scores: list[float]  # the recorded score and the re-evaluation's

    @property
    def best_mean(self) -> float:
        return statistics.fmean(self.best_scores)


def _time(text: str) -> float:
    return datetime.datetime.fromisoformat(text).timestamp()


def run_one(config: str, scheduler: str, args: argparse.Namespace) -> SchedulerRun:
    label = scheduler if scheduler == "fifo" else args.asha_name
    name = f"{Path(config).stem}-{label}"
    sets = [
        f"search.scheduler={scheduler}",
        f"search.num_architectures={args.archs}",
        f"search.reevaluate_top={{k: 1, seeds: {args.seeds}}}",
        *args.set,
        *(args.asha_set if scheduler == "asha" else []),
    ]
    command = [sys.executable, "-m", "nassearch", "run", config, "--name", name]
    command += ["--storage", str(args.out)] + [x for s in sets for x in ("--set", s)]
    exp = args.out / name
    started = time.perf_counter()
    if not (exp / RECORD_FILE).is_file() or args.rerun:
        subprocess.run(command, check=True)
    wall = time.perf_counter() - started
    records = read_records(exp / RECORD_FILE)
    baseline_times = [_time(r.time) for r in records if r.baseline and r.time]
    searched = [r for r in records if not r.baseline]
    ends = [_time(r.time) for r in searched if r.time]
    search_seconds = max(ends) - (max(baseline_times) if baseline_times else min(ends))
    finished = [r for r in searched if r.status == Status.OK]
    best = max(finished, key=lambda r: r.reward)
    extra = [
        float(line["reward"])
        for line in read_jsonl(exp / "reevaluation.jsonl")
        if line.get("key") == best.key and line.get("status") == "ok"
    ]
    epochs = 0
    full = int(load_config(config, args.set, require_data=False).train.epochs)
    for r in searched:
        epochs += r.rung if r.status == Status.STOPPED else full
    train = [r.train_seconds for r in searched if r.train_seconds]
    return SchedulerRun(
        scheduler=label,
        architectures=len(searched),
        finished=len(finished),
        stopped=sum(r.status == Status.STOPPED for r in searched),
        failed=sum(r.status not in (Status.OK, Status.STOPPED) for r in searched),
        search_seconds=search_seconds,
        wall_seconds=wall,
        architectures_per_hour=3600 * len(searched) / search_seconds,
        median_train_seconds=statistics.median(train) if train else math.nan,
        epochs_trained=epochs,
        best_key=best.key or "",
        best_recorded=float(best.reward),
        best_scores=[float(best.reward), *extra],
    )


def epoch_metric_cost(exp: Path) -> dict[str, float]:
    """From the ASHA run's trial logs: seconds of the per-epoch validation loss against the
    epoch's whole time (Tune's time_this_iter_s of the epoch report)."""
    val, whole = [], []
    for path in sorted((exp / "tune").glob("trial_*/result.json")):
        for line in path.read_text().splitlines():
            report = json.loads(line)
            if report.get("final") is False and "epoch_metric_seconds" in report:
                val.append(report["epoch_metric_seconds"])
                whole.append(report["time_this_iter_s"])
    return {
        "epochs": len(val),
        "val_loss_seconds_median": statistics.median(val),
        "epoch_seconds_median": statistics.median(whole),
        "share": sum(val) / sum(whole),
    }


def ap_against_loss_seconds(config: str, sets: list[str], repeats: int = 3) -> dict[str, float]:
    """Seconds of one per-epoch AP (inference, decoding, NMS, COCOeval) and of one validation
    loss on the reward split, for the FPN baseline after one epoch: medians of `repeats`."""
    import torch

    from nassearch.detectors.build import build_detector
    from nassearch.engine.evaluate import evaluate_detector, validation_loss
    from nassearch.engine.trainer import Trainer
    from nassearch.proxy_eval.proxy_data import proxy_datasets
    from nassearch.search_spaces import named_genotypes

    cfg = load_config(config, sets)
    torch.set_num_threads(int(cfg.search.cpus_per_trial))
    train_set, reward_set = proxy_datasets(cfg)
    genotype = named_genotypes(cfg.search.space)["FPN"]
    model = build_detector(cfg.candidate_model(), len(train_set.cat_ids), genotype, seed=0)
    one = cfg.train.model_copy(update={"epochs": 1})
    Trainer(model, train_set, one, device="cpu", seed=0, progress=False, log=silent).fit()
    kwargs = {"device": "cpu", "batch_size": cfg.eval.batch_size, "size_divisor": 32}
    timings: dict[str, list[float]] = {"ap": [], "val_loss": []}
    for _ in range(repeats):
        for name, fn in (("ap", evaluate_detector), ("val_loss", validation_loss)):
            started = time.perf_counter()
            fn(model, reward_set, **kwargs)
            timings[name].append(time.perf_counter() - started)
    return {f"{k}_seconds": statistics.median(v) for k, v in timings.items()} | {
        "reward_images": len(reward_set)
    }


def least_significant_difference(a: list[float], b: list[float]) -> float:
    """Two-sided 5% LSD between the means of a and b (pooled std)."""
    df = len(a) + len(b) - 2
    pooled = ((len(a) - 1) * statistics.variance(a) + (len(b) - 1) * statistics.variance(b)) / df
    return stats.t.ppf(0.975, df) * math.sqrt(pooled * (1 / len(a) + 1 / len(b)))


def table(runs: list[SchedulerRun], lsd: float) -> str:
    lines = [
        "| scheduler | archs | finished | stopped | search s | archs/hour | epochs trained "
        "| median train s | best (recorded) | best re-scored mean ± std (n) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        sd = statistics.stdev(r.best_scores) if len(r.best_scores) > 1 else 0.0
        lines.append(
            f"| {r.scheduler} | {r.architectures} | {r.finished} | {r.stopped} "
            f"| {r.search_seconds:.0f} | {r.architectures_per_hour:.1f} | {r.epochs_trained} "
            f"| {r.median_train_seconds:.1f} | {r.best_recorded:.4f} "
            f"| {r.best_mean:.4f} ± {sd:.4f} ({len(r.best_scores)}) |"
        )
    fifo, asha = runs
    speedup = asha.architectures_per_hour / fifo.architectures_per_hour
    gap = asha.best_mean - fifo.best_mean
    verdict = (
        "within" if abs(gap) <= lsd else f"{'better' if gap > 0 else 'worse'} than FIFO's beyond"
    )
    lines += [
        "",
        f"ASHA: {speedup:.2f}x the architectures per hour of FIFO; its best re-scored mean is "
        f"{gap:+.4f} from FIFO's: {verdict} the least significant difference {lsd:.4f}.",
    ]
    return "\n".join(lines) + "\n"


def plot(runs: list[SchedulerRun], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2))
    names = [r.scheduler for r in runs]
    left.bar(names, [r.architectures_per_hour for r in runs], color=["tab:gray", "tab:blue"])
    left.set_ylabel("architectures per hour")
    left.set_title("throughput", fontsize=9)
    means = [r.best_mean for r in runs]
    errors = [statistics.stdev(r.best_scores) if len(r.best_scores) > 1 else 0 for r in runs]
    right.bar(names, means, yerr=errors, capsize=6, color=["tab:gray", "tab:blue"])
    for i, r in enumerate(runs):
        right.scatter([i] * len(r.best_scores), r.best_scores, color="black", s=10, zorder=3)
    right.set_ylabel("best architecture's reward")
    right.set_title("best, re-scored at the full budget", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--archs", type=int, default=24)
    parser.add_argument("--seeds", type=int, default=3, help="re-scoring seeds of each best")
    parser.add_argument("--out", type=Path, default=Path("runs/schedulers"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--asha-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="settings of the ASHA run only (e.g. search.rung_metric=reward)",
    )
    parser.add_argument("--asha-name", default="asha", help="its run's name suffix")
    parser.add_argument("--rerun", action="store_true", help="run again over finished runs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = [run_one(args.config, s, args) for s in ("fifo", "asha")]
    lsd = least_significant_difference(runs[0].best_scores, runs[1].best_scores)
    text = table(runs, lsd)
    cost = epoch_metric_cost(args.out / f"{Path(args.config).stem}-{args.asha_name}")
    cost |= ap_against_loss_seconds(args.config, args.set)
    text += (
        f"\nPer-epoch rung metric of the ASHA run took "
        f"{cost['val_loss_seconds_median']:.2f} s (median of {cost['epochs']} epochs), "
        f"{100 * cost['share']:.1f}% of the trials' epoch time "
        f"({cost['epoch_seconds_median']:.1f} s median); on the FPN baseline after one epoch, "
        f"AP on the same {cost['reward_images']} images took {cost['ap_seconds']:.2f} s against "
        f"{cost['val_loss_seconds']:.2f} s for the loss.\n"
    )
    print(text)
    result = {
        "runs": [asdict(r) for r in runs],
        "lsd": lsd,
        "config": args.config,
        "epoch_metric_cost": cost,
    }
    (args.out / f"schedulers-{args.asha_name}.json").write_text(json.dumps(result, indent=2))
    (args.out / f"schedulers-{args.asha_name}.md").write_text(text)
    plot(runs, args.out / f"schedulers-{args.asha_name}.png")


if __name__ == "__main__":
    main()
