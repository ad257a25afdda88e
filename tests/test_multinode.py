"""A search on a real two-node Ray cluster (`ray.cluster_utils.Cluster`, both nodes on this
machine): trials spread over the nodes, and the search finishes when the worker node is removed
in the middle of a trial, with every architecture recorded once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from search_configs import search_config, write

from nassearch.jsonl import read_jsonl


def running_trials(tune_dir: Path, recorded: set[str]) -> list[Path]:
    """Trial folders that reported an epoch and are not recorded yet."""
    return [
        d
        for d in tune_dir.glob("trial_*")
        if (d / "result.json").is_file()
        and (d / "result.json").stat().st_size > 0
        and d.name.removeprefix("trial_") not in recorded
    ]


def node_ids(trial_dir: Path) -> set[str]:
    lines = (trial_dir / "result.json").read_text().splitlines()
    return {json.loads(line).get("node_id") for line in lines if line.strip()} - {None}


@pytest.mark.slow
def test_search_survives_losing_a_worker_node_mid_trial(tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        cfg = search_config(tmp_path, num_architectures=4, max_retries=1)
        cfg["train"]["epochs"] = 4  # long enough to be cut mid-training
        path = write(tmp_path, cfg)
        exp = tmp_path / "runs" / "tiny-search"
        records = exp / "architectures.jsonl"
        env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
        driver = subprocess.Popen(
            [sys.executable, "-m", "nassearch", "run", path, "--address", cluster.address],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 300
        # Wait until both nodes' slots train at once: one of the two trials is on the worker.
        while True:
            recorded = {r["trial_id"] for r in read_jsonl(records)} if records.is_file() else set()
            if len(running_trials(exp / "tune", recorded)) >= 2:
                break
            if driver.poll() is not None or time.monotonic() > deadline:
                driver.kill()
                pytest.fail(f"no two trials ran at once:\n{driver.communicate()[0]}")
            time.sleep(0.2)
        cluster.remove_node(worker)
        out, _ = driver.communicate(timeout=600)
        assert driver.returncode == 0, out
        lines = records.read_text().splitlines()
        parsed = [json.loads(line) for line in lines]  # every line parses
        searched = [r for r in parsed if not r["baseline"]]
        assert len(searched) == 4 and len({r["trial_id"] for r in searched}) == 4
        assert len({r["candidate_id"] for r in searched}) == 4
        # The interrupted trial was retried on the head (from its checkpoint) or failed with
        # a message; nothing is recorded twice.
        for r in searched:
            assert r["status"] == "ok" or r["message"], r
        trial_dirs = sorted((exp / "tune").glob("trial_*"))
        nodes = set().union(*(node_ids(d) for d in trial_dirs))
        assert len(nodes) == 2, nodes  # trials ran on both nodes
        by_id = {r["trial_id"]: r for r in searched}
        for trial_dir in trial_dirs:
            if not (trial_dir / "error.txt").is_file():
                continue  # Tune writes error.txt for a trial whose actor died with its node
            # Retried on the head from its last epoch checkpoint: no epoch trained twice.
            lines = [json.loads(x) for x in (trial_dir / "result.json").read_text().splitlines()]
            epochs = [x["epoch"] for x in lines if x.get("final") is False]
            assert epochs == sorted(set(epochs)) and len(node_ids(trial_dir)) == 2, epochs
            assert by_id[trial_dir.name.removeprefix("trial_")]["status"] == "ok"
        assert "warning: the Ray cluster has 2 nodes" in out
    finally:
        cluster.shutdown()
