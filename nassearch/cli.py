"""`nassearch` command line: run, export, train, eval, summary, show, data synth.

Every command turns bad input into one line on stderr (`error: <file>: <key>: <problem>`) and exit
status 2; nothing else is printed as a traceback.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from nassearch.distributed import is_main_rank
from nassearch.errors import NasSearchError, NasSearchWarning, require_int
from nassearch.output_paths import check_output_file, check_output_folder
from nassearch.status import Status

EXIT_BAD_INPUT = 2
# Stopped by a signal after writing a checkpoint (`--resume` continues): 128 + SIGINT, as a shell.
EXIT_INTERRUPTED = 130


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment YAML file")
    p.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=2 model.backbone.depth=18",
    )
    p.add_argument("--name", help="run name (default: the config's `name`)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nassearch", description="Neural architecture search for object detection."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "run", help="search architectures: a controller proposes, Ray Tune trials score"
    )
    _add_config_args(p)
    p.add_argument(
        "--storage", help="folder holding experiments (default: the config's output_dir)"
    )
    p.add_argument(
        "--address", help="join an existing Ray cluster (then --storage must be on shared storage)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted search (CONFIG may then be its experiment folder)",
    )

    p = sub.add_parser(
        "export",
        help="write a search's top-K architectures: genotype, retrain config, picture, leaderboard",
    )
    p.add_argument(
        "experiment",
        nargs="?",
        metavar="EXPERIMENT_DIR",
        help="experiment folder (default: the most recent one under --runs-dir)",
    )
    p.add_argument("--top", type=int, required=True, metavar="K", help="how many to export")
    p.add_argument("--out", help="output folder (default: EXPERIMENT_DIR/export)")
    p.add_argument(
        "--include-baselines",
        action="store_true",
        help="rank the baselines with the searched architectures (marked in the leaderboard)",
    )
    p.add_argument(
        "--recipe",
        choices=("paper", "search"),
        default="paper",
        help="full-training recipe of the paper (default) or the search's own small settings",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="images per step in the retrain configs; the learning rate is scaled linearly",
    )
    p.add_argument(
        "--runs-dir", default="runs", help="where to look for the latest experiment (default: runs)"
    )

    p = sub.add_parser(
        "fidelity",
        help="measure a search's reward: seed noise (ICC) and rank agreement with longer training",
    )
    p.add_argument("experiment", metavar="EXPERIMENT_DIR", help="a finished (or stopped) search")
    p.add_argument("--top", type=int, default=5, metavar="N", help="the search's N best (5)")
    p.add_argument(
        "--random", type=int, default=5, metavar="M", help="and M random others from the record (5)"
    )
    p.add_argument(
        "--seeds", type=int, default=3, metavar="K", help="more proxy seeds per architecture (3)"
    )
    p.add_argument(
        "--reference",
        default=None,
        metavar="CONFIG_OR_RECIPE",
        help="reference training: `longer` (3x epochs, 1.25x input; default) or a config file",
    )
    p.add_argument(
        "--reference-metric",
        default="ap",
        help="what the reference reports: ap (default), ap50 or reward (the proxy's reward)",
    )
    p.add_argument("--out", help="output folder (default: EXPERIMENT_DIR/fidelity)")
    p.add_argument("--address", help="join an existing Ray cluster")

    p = sub.add_parser(
        "report", help="draw a search as a slide: rewards, controller, cost/Pareto, top-3 pictures"
    )
    p.add_argument("experiment", metavar="EXPERIMENT_DIR", help="an experiment folder")
    p.add_argument("--out", help="output folder (default: EXPERIMENT_DIR)")
    p.add_argument(
        "--cost",
        choices=("macs", "params", "latency_ms"),
        default="macs",
        help="the cost axis of the Pareto panel (default: macs)",
    )

    p = sub.add_parser("train", help="train a fixed architecture and report its COCO AP")
    _add_config_args(p)
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")

    p = sub.add_parser("eval", help="evaluate a checkpoint on the config's validation set")
    _add_config_args(p)
    p.add_argument("--checkpoint", required=True, help="checkpoint file (.pth)")

    p = sub.add_parser(
        "export-onnx",
        help="export a trained detector to ONNX (raw per-level head outputs), checked with onnxruntime",
    )
    _add_config_args(p)
    p.add_argument("--checkpoint", required=True, help="checkpoint file (.pth)")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument(
        "--input-size",
        help="S or HxW, a multiple of input.size_divisor (default: the config's network input)",
    )
    p.add_argument(
        "--no-check", action="store_true", help="skip the onnxruntime comparison with PyTorch"
    )

    p = sub.add_parser(
        "summary", help="parameters and multiply-adds per part of a config's detector"
    )
    _add_config_args(p)
    p.add_argument(
        "--input-size",
        default=None,
        help="S or HxW, a multiple of input.size_divisor (default: the config's network input)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("show", help="draw a searched architecture (genotype) as a picture")
    p.add_argument(
        "source",
        metavar="GENOTYPE_OR_CONFIG",
        help="SPACE:NAME (e.g. nasfpn:PAPER), an arch/genotype YAML, or an experiment config",
    )
    p.add_argument("--out", required=True, help="image file (.png, .pdf or .svg)")

    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="TOOL")
    s = data_sub.add_parser("synth", help="write the synthetic COCO-format dataset to a folder")
    s.add_argument("--out", required=True, help="output folder (must be new or empty)")
    s.add_argument("--num-train", type=int, default=400)
    s.add_argument("--num-val", type=int, default=100)
    s.add_argument("--image-size", type=int, default=160)
    s.add_argument("--min-object-size", type=int, default=8)
    s.add_argument(
        "--max-object-size", type=int, default=None, help="default: min(128, --image-size)"
    )
    s.add_argument("--max-objects", type=int, default=6)
    s.add_argument("--seed", type=int, default=0)
    return parser


def _load(args: argparse.Namespace, *, require_data: bool = True):
    from nassearch.config import load_config

    overrides = list(args.overrides)
    if args.name:
        overrides.append(f"name={args.name}")
    return load_config(args.config, overrides, require_data=require_data)


def cmd_run(args: argparse.Namespace) -> int:
    from nassearch.search import CONFIG_FILE, run_search

    source, storage = args.config, args.storage
    if args.resume and Path(source).is_dir():
        # `nassearch run runs/<name> --resume`: the folder's saved config, the folder itself.
        folder = Path(source).resolve()
        if not (folder / CONFIG_FILE).is_file():
            raise NasSearchError(f"{source}: not an experiment folder (no {CONFIG_FILE})")
        if args.storage:
            raise NasSearchError("--storage: not used when resuming an experiment folder")
        args.config = str(folder / CONFIG_FILE)
        args.name = folder.name
        storage = str(folder.parent)
    cfg = _load(args)
    if "search" not in cfg.model_fields_set:
        raise NasSearchError(
            f"{args.config}: search: missing; `nassearch run` needs a search section (space, "
            "controller, budget; see experiments/quickstart.yaml), `nassearch train` trains this config"
        )
    run_search(cfg, storage=storage, address=args.address, resume=args.resume)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from nassearch.export import cmd_export as export

    return export(args)


def cmd_fidelity(args: argparse.Namespace) -> int:
    from nassearch.fidelity.study import run_fidelity

    run_fidelity(
        args.experiment,
        top=args.top,
        random=args.random,
        seeds=args.seeds,
        reference=args.reference,
        reference_metric=args.reference_metric,
        out=args.out,
        address=args.address,
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from nassearch.report import write_report

    png, md = write_report(args.experiment, out=args.out, cost=args.cost)
    print(f"report: {png} and {md}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Single-process training, or one rank of a DDP job when launched by torchrun."""
    from nassearch.distributed import init_distributed, shutdown_distributed
    from nassearch.train import run_train

    cfg = _load(args)
    ctx, device = init_distributed(cfg.device)
    try:
        summary = run_train(cfg, resume=args.resume, device=device, distributed=ctx)
    finally:
        shutdown_distributed(ctx)
    return {Status.OK: 0, Status.INTERRUPTED: EXIT_INTERRUPTED}.get(summary["status"], 1)


def cmd_eval(args: argparse.Namespace) -> int:
    from nassearch.distributed import world_size_from_env
    from nassearch.train import run_eval

    if world_size_from_env() > 1:
        raise NasSearchError("nassearch eval runs in one process; launch it without torchrun")
    run_eval(_load(args), args.checkpoint)
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from nassearch.onnx_export import export_onnx, parse_input_size

    check_output_file(args.out)
    cfg = _load(args, require_data=False)
    report = export_onnx(
        cfg,
        args.checkpoint,
        args.out,
        input_size=parse_input_size(args.input_size, cfg),
        check=not args.no_check,
    )
    _, _, height, width = report.input_shape
    print(
        f"wrote {report.path}: images [batch, 3, {height}, {width}] -> "
        f"{len(report.output_names)} outputs ({', '.join(report.output_names[:2])}, ...) "
        f"in {report.seconds:.1f} s"
    )
    if report.check is None:
        print("not checked with onnxruntime (--no-check)")
    else:
        print(report.check.summary())
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from nassearch.onnx_export import parse_input_size
    from nassearch.summary import format_summary, summarize

    cfg = _load(args, require_data=False)
    size = parse_input_size(args.input_size, cfg) if args.input_size is not None else None
    result = summarize(cfg, input_size=size)
    print(json.dumps(result, indent=2) if args.json else format_summary(result))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from nassearch.show import draw, load_genotype

    if Path(args.out).suffix.lower() not in (".png", ".pdf", ".svg"):
        raise NasSearchError(f"--out {args.out}: use a .png, .pdf or .svg file name")
    check_output_file(args.out)
    genotype, context = load_genotype(args.source)
    out = draw(genotype, args.out, **context)
    print(f"{genotype.space} architecture {genotype.key()} drawn to {out}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from nassearch.data.synthetic import generate_synthetic

    out = check_output_folder(args.out)
    if out.exists() and any(out.iterdir()):
        raise NasSearchError(f"--out {out}: exists and is not an empty folder; choose a new one")
    for flag, value in (
        ("--num-train", args.num_train),
        ("--num-val", args.num_val),
        ("--min-object-size", args.min_object_size),
        ("--max-objects", args.max_objects),
    ):
        require_int(flag, value)
    require_int("--image-size", args.image_size, 32)
    if args.max_object_size is not None:
        require_int("--max-object-size", args.max_object_size, args.min_object_size)
    root = generate_synthetic(
        out,
        num_train=args.num_train,
        num_val=args.num_val,
        image_size=args.image_size,
        min_object_size=args.min_object_size,
        max_object_size=args.max_object_size or min(128, args.image_size),
        max_objects=args.max_objects,
        seed=args.seed,
    )
    print(
        f"synthetic dataset written to {root} ({args.num_train} train, {args.num_val} val images)"
    )
    print(f"use it as COCO data: --set {' '.join(coco_overrides(root))}")
    return 0


def coco_overrides(root: Path) -> list[str]:
    """The `--set` items that point a COCO config at a `data synth` folder."""
    items = ["data.type=coco", f"data.root={root}"]
    for split in ("train", "val"):
        items += [
            f"data.{split}.images={split}",
            f"data.{split}.annotations=annotations/instances_{split}.json",
        ]
    return items


COMMANDS = {
    "run": cmd_run,
    "export": cmd_export,
    "fidelity": cmd_fidelity,
    "report": cmd_report,
    "train": cmd_train,
    "eval": cmd_eval,
    "export-onnx": cmd_export_onnx,
    "summary": cmd_summary,
    "show": cmd_show,
    "data": cmd_data,
}


def located(message: str, config: str | None) -> str:
    """A message that starts with a config key (`data.root: ...`) names the config file too."""
    from nassearch.config import ExperimentConfig

    section = message.split(":", 1)[0].split(".", 1)[0]
    if config and section in ExperimentConfig.model_fields:
        return f"{config}: {message}"
    return message


def _show_warning(message, category, filename, lineno, file=None, line=None, *, default) -> None:
    """Our warnings as one line, like errors; everyone else's as Python prints them."""
    if issubclass(category, NasSearchWarning):
        if is_main_rank():
            print(f"warning: {message}", file=sys.stderr)
        return
    default(message, category, filename, lineno, file, line)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = functools.partial(_show_warning, default=warnings.showwarning)
            return COMMANDS[args.command](args)
    except NasSearchError as exc:
        # Under torchrun every rank meets the same bad input; rank 0 alone reports it.
        if is_main_rank():
            print(f"error: {located(str(exc), getattr(args, 'config', None))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
