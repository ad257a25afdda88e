"""Joining the Ray cluster a command runs on: this machine, or an existing one (`--address`).

`ray.init(address=...)` keeps retrying for minutes, printing connection warnings, when no Ray
cluster answers there, and exits the process when something else answers on the port. So an
address is checked first, within `PROBE_TIMEOUT_S`: a TCP connection to it, then a throw-away
`ray.init` in a child process. Either failing is one error line naming the address.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import ray

from nassearch.console import Log, silent
from nassearch.errors import NasSearchError

PROBE_TIMEOUT_S = 25
_CONNECT_TIMEOUT_S = 5
_GCS_PORT = 6379  # `ray start --head` default
_CLIENT_PORT = 10001  # Ray Client (ray://) default
_PROBE = (
    "import sys, ray; ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False)"
)


def host_and_port(address: str) -> tuple[str, int]:
    """`host[:port]` or `ray://host[:port]` -> (host, port), with Ray's default ports."""
    rest = address.removeprefix("ray://")
    default = _CLIENT_PORT if rest != address else _GCS_PORT
    host, sep, port = rest.rpartition(":")
    if not sep:
        return rest, default
    if not port.isdigit() or not host:
        raise NasSearchError(f"--address {address}: expected HOST:PORT or ray://HOST:PORT")
    return host.strip("[]"), int(port)


def check_address(address: str) -> None:
    """Raise one line naming `address` unless a Ray cluster answers there (`auto` is Ray's)."""
    if address != "auto":
        host, port = host_and_port(address)
        try:
            socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
            raise NasSearchError(
                f"--address {address}: no Ray cluster answers on {host}:{port} ({reason}); start "
                "one there with `ray start --head`, or leave --address out to run on this machine"
            ) from None
    env = {
        **os.environ,
        "RAY_gcs_rpc_server_reconnect_timeout_s": str(_CONNECT_TIMEOUT_S * 2),
        "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
    }
    try:
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE, address],
            env=env,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
        failed = probe.returncode != 0
    except subprocess.TimeoutExpired:
        failed = True
    if failed:
        raise NasSearchError(
            f"--address {address}: something answers there, but Ray could not join it as a "
            f"cluster within {PROBE_TIMEOUT_S} s (not a Ray head node, or another Ray version)"
        )


def connect(address: str | None, *, checked: bool = False) -> None:
    """Start Ray on this machine (`address` None) or join the cluster at `address`, once
    (`checked`: `check_address` already passed)."""
    if ray.is_initialized():
        return
    if address is not None and not checked:
        check_address(address)
    ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)


def warn_if_storage_not_shared(storage: Path, log: Log | None = print) -> str | None:
    """On a cluster of several nodes every node reads and writes `storage` (trial checkpoints,
    records, the feature cache): say so once, since it cannot be checked from here."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return None
    message = (
        f"the Ray cluster has {len(nodes)} nodes: every node must see {storage} at this same "
        "path (an NFS or other shared mount), or trials cannot save checkpoints and the "
        "feature cache cannot be read (see the README's multi-node set-up)"
    )
    (log or silent)(f"warning: {message}")
    return message
