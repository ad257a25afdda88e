"""scripts/end_to_end.py on a tiny search: search, export, retrain the best and FPN over seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from search_configs import search_config, write

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "end_to_end.py"


@pytest.mark.slow
def test_end_to_end_script_writes_the_table_and_chart(tmp_path):
    cfg = search_config(tmp_path, num_architectures=2)
    del cfg["output_dir"]  # the script puts everything under --out
    out = tmp_path / "demo"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    args = [sys.executable, str(SCRIPT), write(tmp_path, cfg), "--out", str(out)]
    args += ["--top", "1", "--seeds", "2", "--epochs", "1"]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = json.loads((out / "end_to_end.json").read_text())
    assert [r["name"] for r in rows] == ["arch-1", "FPN"]
    assert all(len(r["ap"]) == 2 and r["params"] > 0 and r["macs"] > 0 for r in rows)
    # Each architecture and seed is its own retrain run folder, trained on the search's data.
    runs = sorted(p.name for p in (out / "retrain").iterdir())
    assert runs == ["FPN-seed0", "FPN-seed1", "arch-1-seed0", "arch-1-seed1"]
    table = (out / "end_to_end.md").read_text()
    assert table.count("\n") == 4 and "| FPN | — |" in table
    assert (out / "end_to_end.png").stat().st_size > 5_000
    # Run again: the search and every training are read back, nothing is trained twice.
    again = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0 and "training " not in again.stdout
