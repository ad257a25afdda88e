"""Three classes of bad input found on main, each refused in one line before any work: an
out-of-range search-space option, an output path that cannot be written, a non-positive size."""

from __future__ import annotations

from pathlib import Path

import pytest
from recorded import make_experiment, record
from search_configs import search_config, write

from nassearch.cli import EXIT_BAD_INPUT, main
from nassearch.search_spaces.nasfpn import FPN, PAPER


def one_line_error(capsys, *argv: str) -> str:
    rc = main(list(argv))
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert rc == EXIT_BAD_INPUT, (rc, err)
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in captured.out + captured.err
    return err


@pytest.fixture
def experiment(tmp_path) -> Path:
    cfg = search_config(tmp_path)
    return make_experiment(
        tmp_path, [record(FPN, 0.1, "t0", baseline=True), record(PAPER, 0.2, "t1")], cfg
    )


@pytest.mark.parametrize(
    ("option", "needle"),
    [
        ("search.space_options.num_cells=100000", "from 5 to 64, got 100000"),
        ("search.space_options.num_cells=4", "from 5 to 64, got 4"),
        ("search.space_options.levels=3", "nasfpn takes no such option"),
    ],
)
def test_an_out_of_range_space_option_is_refused_and_leaves_no_run_folder(
    tmp_path, capsys, option, needle
):
    config = write(tmp_path, search_config(tmp_path))
    storage = tmp_path / "storage"
    err = one_line_error(capsys, "run", config, "--storage", str(storage), "--set", option)
    assert "search.space_options" in err and needle in err, err
    assert not storage.exists()


def test_every_command_that_writes_checks_its_output_path_first(tmp_path, capsys, experiment):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    below = blocker / "out"
    cases = [
        ("show", "nasfpn:PAPER", "--out", str(below / "pic.png")),
        ("data", "synth", "--out", str(below)),
        ("report", str(experiment), "--out", str(below)),
        ("export", str(experiment), "--top", "1", "--out", str(below)),
        ("fidelity", str(experiment), "--out", str(below)),
        ("export-onnx", str(experiment / "config.yaml"), "--checkpoint", "x.pth", "--out",
         str(below / "m.onnx")),
    ]  # fmt: skip
    for argv in cases:
        err = one_line_error(capsys, *argv)
        assert f"--out {below}" in err and f"{blocker} is a file" in err, (argv, err)
    assert blocker.read_text() == "not a folder"
    # A folder where a file is wanted, a file where a folder is wanted.
    folder = tmp_path / "looks-like.png"
    folder.mkdir()
    err = one_line_error(capsys, "show", "nasfpn:PAPER", "--out", str(folder))
    assert "is a folder; give a file name" in err, err
    err = one_line_error(capsys, "report", str(experiment), "--out", str(blocker))
    assert "exists and is not a folder" in err, err
    assert not (experiment / "report.png").exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (("data", "synth", "--num-train", "0"), "--num-train: must be an integer of at least 1"),
        (
            ("data", "synth", "--max-objects", "-2"),
            "--max-objects: must be an integer of at least 1",
        ),
        (("data", "synth", "--min-object-size", "0"), "--min-object-size: must be an integer"),
        (
            ("data", "synth", "--image-size", "-96"),
            "--image-size: must be an integer of at least 32",
        ),
        (("summary", "CONFIG", "--input-size", "0"), "--input-size '0': expected S or HxW"),
        (("summary", "CONFIG", "--input-size", "-64"), "--input-size '-64': expected S or HxW"),
        (("export", "EXP", "--top", "0"), "--top: must be an integer of at least 1, got 0"),
        (("export", "EXP", "--top", "1", "--batch-size", "-1"), "--batch-size: must be an integer"),
        (("fidelity", "EXP", "--seeds", "0"), "--seeds: must be an integer of at least 1, got 0"),
        (("fidelity", "EXP", "--top", "-1"), "--top: must be an integer of at least 0, got -1"),
    ],
)
def test_a_non_positive_size_argument_is_refused(tmp_path, capsys, experiment, argv, needle):
    out = tmp_path / "synth"
    config = experiment / "config.yaml"
    argv = [{"CONFIG": str(config), "EXP": str(experiment)}.get(a, a) for a in argv] + (
        ["--out", str(out)] if argv[0] == "data" else []
    )
    err = one_line_error(capsys, *argv)
    assert needle in err, err
    assert not out.exists()
