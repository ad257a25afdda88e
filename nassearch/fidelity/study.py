"""`nassearch fidelity`: how noisy a search's reward is, and whether it ranks like longer training.

Two studies on one experiment folder, run as one resumable Ray Tune job (`rescore`):

- Seed noise: the top N and M random recorded architectures are scored K more times under the
  search's own proxy with seeds it never used; one-way ANOVA gives the ICC, the pooled
  within-architecture std against the between-architecture std, and the smallest significant
  difference (`stats.seed_noise`).
- Rank fidelity: the same architectures are trained once under a reference recipe (default:
  the search config with 3x the epochs and 1.25x the input side; or any experiment config). Kendall
  tau and Spearman rho between proxy reward and reference metric, with bootstrap 95% intervals,
  and the top-k overlap (`stats.rank_fidelity`).

Writes `fidelity.json`, `fidelity.md` and `fidelity.png` (proxy reward against reference metric,
error bars from the seeds) to `EXPERIMENT_DIR/fidelity` unless told otherwise.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from nassearch.atomic import atomic_write, atomic_write_text
from nassearch.cluster import connect, warn_if_storage_not_shared
from nassearch.config import ExperimentConfig, load_config
from nassearch.console import Log, silent
from nassearch.errors import NasSearchError, require_int
from nassearch.export import Experiment, load_experiment
from nassearch.fidelity.stats import RankFidelity, SeedNoise, rank_fidelity, seed_noise
from nassearch.jsonl import json_safe
from nassearch.output_paths import check_output_folder
from nassearch.proxy_eval.proxy_task import repeat_seed
from nassearch.proxy_eval.rescore import Score, ScoreJob, run_score_jobs
from nassearch.ranking import RankedArchitecture, rank_records

LONGER = "longer"  # the default reference recipe
ReferenceMetric = Literal["ap", "ap50", "reward"]
REFERENCE_METRICS = ("ap", "ap50", "reward")
SCORES_FILE = "scores.jsonl"


@dataclass(frozen=True)
class StudiedArchitecture:
    """One architecture of the study: how it was chosen, every proxy score, its reference value."""

    rank: int  # its rank in the search (1 = best)
    key: str
    chosen: Literal["top", "random"]
    recorded: float  # the reward the search ranked it by (mean of its recorded scores)
    recorded_scores: tuple[float, ...]  # the search's own scores (record and re-evaluation)
    # The study's new seeds. The recorded scores are not pooled in: the search chose its best by
    # them, so they are biased upwards (a lucky draw is why an architecture ranks first).
    proxy_scores: tuple[float, ...]
    reference: float | None  # the reference metric; None if its reference training failed
    params: int | None
    macs: int | None

    @property
    def proxy_mean(self) -> float:
        return statistics.fmean(self.proxy_scores) if self.proxy_scores else math.nan

    @property
    def proxy_std(self) -> float:
        return statistics.stdev(self.proxy_scores) if len(self.proxy_scores) > 1 else 0.0


@dataclass(frozen=True)
class FidelityResult:
    """Both studies' figures, as written to fidelity.json."""

    experiment: str
    reference_recipe: str
    reference_metric: str
    new_seeds: tuple[int, ...]
    architectures: tuple[StudiedArchitecture, ...]
    seed_noise: SeedNoise | None
    noise_scores: str  # which scores the seed noise is measured on
    recorded_fidelity: RankFidelity | None  # the search's reward against the reference
    mean_fidelity: RankFidelity | None  # the mean over all seeds against the reference
    failed_jobs: int

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        for item, arch in zip(out["architectures"], self.architectures, strict=True):
            item.update(proxy_mean=arch.proxy_mean, proxy_std=arch.proxy_std)
        return json_safe(out)


# ---------------------------------------------------------------------------------- reference


def longer_reference(cfg: ExperimentConfig) -> ExperimentConfig:
    """The default reference recipe: 3x the proxy's epochs (and iteration cap), 1.25x its input
    side (rounded up to the size divisor), no time limit, one score per architecture; about 4.7x
    the proxy's cost, so a study of 10 architectures costs about 50 proxy evaluations."""
    d = cfg.input.size_divisor

    def larger(side: int) -> int:
        return -(-int(round(side * 1.25)) // d) * d

    train = cfg.train.model_copy(
        update={
            "epochs": cfg.train.epochs * 3,
            "max_iters": None if cfg.train.max_iters is None else cfg.train.max_iters * 3,
        }
    )
    inp = cfg.input.model_copy(
        update={
            "size": larger(cfg.input.size),
            "short_side": larger(cfg.input.short_side),
            "max_size": larger(cfg.input.max_size),
        }
    )
    proxy = cfg.proxy.model_copy(update={"time_limit_s": None, "repeats": 1})
    return cfg.model_copy(update={"train": train, "input": inp, "proxy": proxy})


def reference_config(search: ExperimentConfig, reference: str | None) -> ExperimentConfig:
    """`longer` (or None) or an experiment/retrain config file for the same detector type."""
    if reference is None or reference == LONGER:
        return longer_reference(search)
    path = Path(reference)
    if not path.is_file():
        raise NasSearchError(
            f"--reference {reference}: neither the recipe {LONGER!r} nor a config file"
        )
    cfg = load_config(path)
    if cfg.model.type != search.model.type:
        raise NasSearchError(
            f"--reference {reference}: model.type {cfg.model.type}, but the search trained "
            f"{search.model.type} detectors"
        )
    return cfg.model_copy(
        update={"proxy": cfg.proxy.model_copy(update={"time_limit_s": None, "repeats": 1})}
    )


def reference_value(score: Score, metric: ReferenceMetric) -> float | None:
    if not score.ok:
        return None
    value = {"ap": score.ap, "ap50": score.ap50, "reward": score.reward}[metric]
    return None if value is None or not math.isfinite(value) else float(value)


# ------------------------------------------------------------------------------------- choice


def choose_architectures(
    exp: Experiment, top: int, random: int
) -> list[tuple[int, RankedArchitecture, Literal["top", "random"]]]:
    """The search's best `top` and `random` others drawn with the search's seed: (rank, arch, why)."""
    ranked = rank_records(exp.records, exp.reevaluations)
    chosen = [(i + 1, a, "top") for i, a in enumerate(ranked[:top])]
    rest = list(range(top, len(ranked)))
    rng = np.random.default_rng(exp.config.seed)
    picks = sorted(rng.choice(rest, size=min(random, len(rest)), replace=False).tolist())
    chosen += [(i + 1, ranked[i], "random") for i in picks]
    if len(chosen) < 3:
        raise NasSearchError(
            f"{exp.path}: a fidelity study needs at least 3 successful architectures; "
            f"{len(ranked)} in the record, {len(chosen)} chosen (--top {top}, --random {random})"
        )
    return chosen


def _check_arguments(top: int, random: int, seeds: int, metric: str) -> None:
    for name, value, least in (("--top", top, 0), ("--random", random, 0), ("--seeds", seeds, 1)):
        require_int(name, value, least)
    if metric not in REFERENCE_METRICS:
        raise NasSearchError(
            f"--reference-metric: {metric!r} (expected one of {', '.join(REFERENCE_METRICS)})"
        )


# ---------------------------------------------------------------------------------------- run


def run_fidelity(
    exp_dir: str | Path,
    *,
    top: int = 5,
    random: int = 5,
    seeds: int = 3,
    reference: str | None = None,
    reference_metric: ReferenceMetric = "ap",
    out: str | Path | None = None,
    address: str | None = None,
    log: Log | None = print,
) -> FidelityResult:
    """Run both studies on an experiment folder (resumable: finished runs are kept in scores.jsonl)."""
    import os

    _check_arguments(top, random, seeds, reference_metric)
    out = check_output_folder(out if out is not None else Path(exp_dir) / "fidelity")
    exp = load_experiment(exp_dir)
    cfg = exp.config
    ref_cfg = reference_config(cfg, reference)
    chosen = choose_architectures(exp, top, random)
    # Seeds the search never used: after the repeats' and the re-evaluation's.
    used = cfg.proxy.repeats + (cfg.search.reevaluate_top.seeds if cfg.search.reevaluate_top else 0)
    new_seeds = tuple(repeat_seed(cfg, used + j) for j in range(seeds))
    jobs = []
    for rank, arch, _ in chosen:
        genotype = arch.record.genotype
        for seed in new_seeds:
            jobs.append(
                ScoreJob(f"{arch.key}-proxy-{seed}", arch.key, genotype, seed, "proxy", f"#{rank}")
            )
        jobs.append(
            ScoreJob(f"{arch.key}-reference", arch.key, genotype, cfg.seed, "reference", f"#{rank}")
        )
    out.mkdir(parents=True, exist_ok=True)
    log = log or silent
    recipe = reference or LONGER
    log(
        f"fidelity of {exp.path}: {len(chosen)} architectures ({sum(c[2] == 'top' for c in chosen)} "
        f"best, {sum(c[2] == 'random' for c in chosen)} random), {seeds} more proxy seed(s) each "
        f"and one {recipe} reference training: {len(jobs)} runs -> {out}"
    )
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    connect(address)
    warn_if_storage_not_shared(out, log)
    scores = run_score_jobs(
        jobs,
        {"proxy": cfg, "reference": ref_cfg},
        out / SCORES_FILE,
        storage=out,
        name="tune",
        resources={"cpu": cfg.search.cpus_per_trial, "gpu": cfg.search.gpus_per_trial},
        max_concurrent=cfg.search.max_concurrent,
        log=log,
    )
    result = summarise(exp, chosen, scores, new_seeds, recipe, reference_metric)
    write_outputs(result, out)
    log(describe(result))
    log(f"wrote {out / 'fidelity.md'}, fidelity.json and fidelity.png")
    return result


def summarise(
    exp: Experiment,
    chosen: list[tuple[int, RankedArchitecture, str]],
    scores: list[Score],
    new_seeds: tuple[int, ...],
    recipe: str,
    metric: ReferenceMetric,
) -> FidelityResult:
    by_job = {s.job_id: s for s in scores}
    studied = []
    for rank, arch, why in chosen:
        extra = [by_job.get(f"{arch.key}-proxy-{seed}") for seed in new_seeds]
        ref = by_job.get(f"{arch.key}-reference")
        studied.append(
            StudiedArchitecture(
                rank=rank,
                key=arch.key,
                chosen=why,
                recorded=arch.mean,
                recorded_scores=tuple(arch.scores),
                proxy_scores=tuple(s.reward for s in extra if s and s.ok),
                reference=None if ref is None else reference_value(ref, metric),
                params=arch.record.params,
                macs=arch.record.macs,
            )
        )
    failed = sum(1 for s in scores if not s.ok) + (len(chosen) * (len(new_seeds) + 1) - len(scores))
    # With one new seed there is nothing to measure the noise on but the search's own scores too.
    if any(len(a.proxy_scores) >= 2 for a in studied):
        groups, noise_scores = [a.proxy_scores for a in studied], "new seeds"
    else:
        groups = [a.recorded_scores + a.proxy_scores for a in studied]
        noise_scores = "new seeds and the search's own scores (biased: --seeds 2 or more avoids it)"
    try:
        noise = seed_noise(groups)
    except ValueError:
        noise = None
    paired = [a for a in studied if a.reference is not None and a.proxy_scores]
    references = [a.reference for a in paired]
    recorded = mean = None
    if len(paired) >= 3:
        # Do the search's best stay the best? k = the best chosen, below the whole set.
        k = max(1, min(sum(c[2] == "top" for c in chosen) or 3, len(paired) - 1))
        seed = exp.config.seed
        recorded = rank_fidelity([a.recorded for a in paired], references, seed=seed, top_k=k)
        mean = rank_fidelity([a.proxy_mean for a in paired], references, seed=seed, top_k=k)
    return FidelityResult(
        experiment=str(exp.path.resolve()),
        reference_recipe=recipe,
        reference_metric=metric,
        new_seeds=new_seeds,
        architectures=tuple(studied),
        seed_noise=noise,
        noise_scores=noise_scores,
        recorded_fidelity=recorded,
        mean_fidelity=mean,
        failed_jobs=failed,
    )


# ------------------------------------------------------------------------------------ outputs


def describe(result: FidelityResult) -> str:
    """Two lines: the seed noise, and the rank fidelity."""
    noise = result.seed_noise
    lines = []
    if noise is None:
        lines.append("seed noise: not measurable (fewer than two architectures scored twice)")
    else:
        lines.append(
            f"seed noise: ICC {noise.icc:.2f} (share of reward variance that is architecture), "
            f"within-architecture std {noise.within_std:.4g} vs between {noise.architecture_std:.4g} "
            f"(on the {result.noise_scores}); "
            f"differences below {noise.lsd_single:.4g} (single scores) or {noise.lsd_mean:.4g} "
            "(means) are not significant"
        )
    fid = result.recorded_fidelity
    if fid is None:
        lines.append("rank fidelity: fewer than 3 architectures have a reference result")
    else:
        lines.append(
            f"rank fidelity vs {result.reference_recipe} {result.reference_metric}: Kendall tau "
            f"{fid.kendall_tau.describe()}, Spearman rho {fid.spearman_rho.describe()} "
            f"(95% bootstrap), top-{fid.top_k} overlap {fid.top_k_overlap:.2f} for the search's "
            "reward"
        )
    if result.mean_fidelity is not None:
        fid = result.mean_fidelity
        lines.append(
            f"  the mean of the new seeds: Kendall tau {fid.kendall_tau.describe()}, Spearman rho "
            f"{fid.spearman_rho.describe()}, top-{fid.top_k} overlap {fid.top_k_overlap:.2f}"
        )
    return "\n".join(lines)


def markdown(result: FidelityResult) -> str:
    noise, rec, mean = result.seed_noise, result.recorded_fidelity, result.mean_fidelity
    lines = [
        "# Proxy fidelity",
        "",
        f"Experiment `{result.experiment}`; reference recipe `{result.reference_recipe}`, "
        f"metric `{result.reference_metric}`; new proxy seeds {list(result.new_seeds)}; "
        f"{result.failed_jobs} run(s) failed or missing. Seed noise measured on the "
        f'{result.noise_scores}; "new seeds mean" ranks by the mean of the new seeds only.',
        "",
        "| statistic | value |",
        "|---|---|",
    ]
    if noise is not None:
        lines += [
            f"| ICC(1): share of variance that is architecture | {noise.icc:.3f} |",
            f"| pooled within-architecture std (seed noise) | {noise.within_std:.4g} |",
            f"| between-architecture std (variance component) | {noise.architecture_std:.4g} |",
            f"| std of the architectures' means | {noise.std_of_means:.4g} |",
            f"| ANOVA F, p | {noise.f_statistic:.3g}, {noise.p_value:.2g} |",
            f"| least significant difference, single scores / means | "
            f"{noise.lsd_single:.4g} / {noise.lsd_mean:.4g} |",
        ]
    for label, fid in (("search reward", rec), ("new seeds mean", mean)):
        if fid is not None:
            lines += [
                f"| Kendall tau, {label} vs reference (95% CI) | {fid.kendall_tau.describe()} |",
                f"| Spearman rho, {label} vs reference (95% CI) | {fid.spearman_rho.describe()} |",
                f"| top-{fid.top_k} overlap, {label} | {fid.top_k_overlap:.2f} |",
            ]
    lines += [
        "",
        "| rank | key | chosen | search reward (n) | new seeds mean ± std (n) | reference | params "
        "| GMACs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a in result.architectures:
        ref = "failed" if a.reference is None else f"{a.reference:.4f}"
        gmacs = "—" if not a.macs else f"{a.macs / 1e9:.2f}"
        lines.append(
            f"| {a.rank} | `{a.key}` | {a.chosen} | {a.recorded:.4f} ({len(a.recorded_scores)}) "
            f"| {a.proxy_mean:.4f} ± "
            f"{a.proxy_std:.4f} ({len(a.proxy_scores)}) | {ref} | {a.params or '—'} | {gmacs} |"
        )
    return "\n".join(lines) + "\n"


def plot(result: FidelityResult, path: Path) -> None:
    """Proxy reward (mean ± std over seeds) against the reference metric, one point per architecture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    for why, color in (("top", "tab:red"), ("random", "tab:blue")):
        group = [
            a
            for a in result.architectures
            if a.chosen == why and a.reference is not None and a.proxy_scores
        ]
        if not group:
            continue
        ax.errorbar(
            [a.proxy_mean for a in group],
            [a.reference for a in group],
            xerr=[a.proxy_std for a in group],
            fmt="o",
            color=color,
            capsize=3,
            label=f"{'search top' if why == 'top' else 'random from the record'} ({len(group)})",
        )
        for a in group:
            ax.annotate(
                f"#{a.rank}",
                (a.proxy_mean, a.reference),
                fontsize=7,
                xytext=(4, 3),
                textcoords="offset points",
            )
    fid = result.mean_fidelity
    title = "proxy reward vs reference"
    if fid is not None:
        title += f": Kendall tau {fid.kendall_tau.describe()}"
    if result.seed_noise is not None:
        title += f"\nICC {result.seed_noise.icc:.2f}, seed std {result.seed_noise.within_std:.3g}"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(f"proxy reward, mean ± std over the {len(result.new_seeds)} new seeds")
    ax.set_ylabel(f"reference {result.reference_metric} ({result.reference_recipe})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def write_outputs(result: FidelityResult, out: Path) -> None:
    atomic_write_text(out / "fidelity.json", json.dumps(result.to_dict(), indent=2) + "\n")
    atomic_write_text(out / "fidelity.md", markdown(result))
    plot(result, out / "fidelity.png")
