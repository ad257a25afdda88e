"""`--address`: an address where no Ray cluster answers is one error line, not minutes of Ray's
retries; a cluster of several nodes gets a warning about shared storage."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from search_configs import search_config, write

from nassearch import cluster
from nassearch.errors import NasSearchError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_with_an_address_where_nothing_listens_is_one_line(tmp_path):
    path = write(tmp_path, search_config(tmp_path))
    address = f"127.0.0.1:{free_port()}"
    done = subprocess.run(
        [sys.executable, "-m", "nassearch", "run", path, "--address", address],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"RAY_AUTH_MODE": "disabled", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == (
        f"error: --address {address}: no Ray cluster answers on {address} (Connection refused); "
        "start one there with `ray start --head`, or leave --address out to run on this machine"
    )
    assert not (Path(tmp_path) / "runs").exists()


def test_an_address_where_something_else_answers_is_refused_within_the_probe_time():
    with socket.socket() as server:  # accepts TCP connections, speaks no Ray
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        with pytest.raises(NasSearchError, match="Ray could not join it as a cluster within"):
            cluster.check_address(address)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("10.0.0.5:6380", ("10.0.0.5", 6380)),
        ("head-node", ("head-node", 6379)),
        ("ray://head-node", ("head-node", 10001)),
        ("ray://10.0.0.5:10002", ("10.0.0.5", 10002)),
        ("[::1]:6379", ("::1", 6379)),
    ],
)
def test_addresses_parse_with_rays_default_ports(address, expected):
    assert cluster.host_and_port(address) == expected


def test_a_malformed_address_names_the_flag():
    with pytest.raises(NasSearchError, match=r"--address a:b: expected HOST:PORT"):
        cluster.host_and_port("a:b")


def test_several_nodes_warn_that_storage_must_be_shared(monkeypatch, tmp_path):
    lines: list[str] = []
    monkeypatch.setattr(cluster.ray, "nodes", lambda: [{"Alive": True}])
    assert cluster.warn_if_storage_not_shared(tmp_path, lines.append) is None and lines == []
    monkeypatch.setattr(
        cluster.ray, "nodes", lambda: [{"Alive": True}, {"Alive": True}, {"Alive": False}]
    )
    message = cluster.warn_if_storage_not_shared(tmp_path, lines.append)
    assert lines == [f"warning: {message}"]
    assert f"2 nodes: every node must see {tmp_path} at this same path" in message
