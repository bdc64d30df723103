"""Joining a Ray cluster, or starting the embedded one in this process (``spikerl train`` and
``spikerl tune`` without ``--address``), on loopback and with its token readable by its owner
only (docs/security.md)."""

from __future__ import annotations

import logging
import os
import secrets
import socket
from pathlib import Path

from spikerl_ray.errors import UserError

LOOPBACK = "127.0.0.1"
# Read by Ray when `ray` is imported (ray._private.ray_constants.ENABLE_RAY_CLUSTER): with "0"
# Ray takes 127.0.0.1 as the node address of a new local cluster instead of this machine's
# network address, and its servers then listen on loopback only.
CLUSTER_ENV_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
TOKEN_FILE_MODE = 0o600


def _starts_embedded(address: str | None) -> bool:
    """Whether :func:`init_ray` with ``address`` starts the embedded Ray: neither ``--address``
    nor ``RAY_ADDRESS`` (which a Ray job's entrypoint has) names a cluster to join."""
    return not address and not os.environ.get("RAY_ADDRESS")


def keep_embedded_on_loopback(address: str | None) -> None:
    """Makes the embedded Ray that ``init_ray(address)`` would start listen on 127.0.0.1 only.
    Call it before anything in the process imports ``ray``; joining a cluster is left as is."""
    if _starts_embedded(address):
        os.environ[CLUSTER_ENV_VAR] = "0"


def _token_path() -> Path:
    """The token file Ray reads when ``RAY_AUTH_TOKEN`` is unset: ``RAY_AUTH_TOKEN_PATH``, or
    ``~/.ray/auth_token``."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def protect_token(create: bool) -> None:
    """Makes the token file readable by its owner only. With ``create``, for a new cluster with
    token authentication (Ray's default) and no token yet, first writes one (256 random bits,
    as Ray's own generator), mode 0600 from the start: Ray would write it world-readable."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return
    path = _token_path()
    if create and os.environ.get("RAY_AUTH_MODE", "token").lower() == "token" and \
            "RAY_AUTH_TOKEN_PATH" not in os.environ:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         TOKEN_FILE_MODE)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
    try:
        if path.exists() and path.stat().st_mode & 0o777 != TOKEN_FILE_MODE:
            path.chmod(TOKEN_FILE_MODE)
    except OSError as exc:
        raise UserError(f"cannot make the Ray token {path} readable by its owner only: "
                        f"{exc}") from None


def init_ray(address: str | None) -> None:
    """Joins the cluster at ``address`` (or ``RAY_ADDRESS``), or starts the embedded single-node
    Ray in-process, on 127.0.0.1. Ray's logger keeps the level it has (``spikerl`` sets it;
    Ray's default is INFO)."""
    import ray

    if ray.is_initialized():
        return
    level = logging.getLogger("ray").level
    if _starts_embedded(address):
        if ray.util.get_node_ip_address() != LOOPBACK:
            raise RuntimeError("Ray was imported before spikerl_ray.session."
                               "keep_embedded_on_loopback(): its embedded cluster would "
                               "listen on this machine's network address")
        protect_token(create=True)
        ray.init(address="local", include_dashboard=False, log_to_driver=False,
                 logging_level=level)
        return
    if address:
        check_reachable(address)
    protect_token(create=False)
    try:
        ray.init(address=address, log_to_driver=False, logging_level=level)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = address or os.environ["RAY_ADDRESS"]
        raise UserError(f"cannot join the Ray cluster at {where}: {exc}") from None


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
