"""Joining a Ray cluster, or starting the embedded one in this process (``spikerl train`` and
``spikerl tune`` without ``--address``)."""

from __future__ import annotations

import logging
import os
import socket

from spikerl_ray.errors import UserError


def init_ray(address: str | None) -> None:
    """Joins the cluster at ``address``, or starts the embedded single-node Ray in-process.
    Ray's logger keeps the level it has (``spikerl`` sets it; Ray's default is INFO)."""
    import ray

    if ray.is_initialized():
        return
    level = logging.getLogger("ray").level
    if address:
        check_reachable(address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level=level)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise UserError(f"cannot join the Ray cluster at {address}: {exc}") from None
    else:
        # A single-node embedded cluster stays on loopback.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray.init(include_dashboard=False, log_to_driver=False, logging_level=level)


def check_reachable(address: str) -> None:
    """Refuses at once a ``HOST:PORT`` where nothing listens (``ray.init`` would retry for
    minutes); ``auto`` and ``ray://`` addresses are left to Ray."""
    host, sep, port = address.rpartition(":")
    if address == "auto" or "://" in address:
        return
    if not sep or not port.isdigit():
        raise UserError(f"--address {address}: expected HOST:PORT (e.g. 127.0.0.1:6379) "
                        "or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise UserError(f"cannot join the Ray cluster at {address}: {exc}") from None
