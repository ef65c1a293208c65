"""What both Ray users (the search's RayRunner, fleet profiling) need before they touch a
cluster: the ``ray`` module or one line naming the extra, and a quick check that something
listens at an address (``ray.init`` retries a wrong one for minutes, warning every few seconds).
Ray itself is imported only here and only when called, so moenas works without it."""

from __future__ import annotations

import socket
from typing import Any

from .errors import UserError

RAY_EXTRA = "pip install 'moenas[ray]'"


def import_ray(what: str) -> Any:
    """The ``ray`` module, or a UserError: "``what`` needs Ray, which is not installed here: pip
    install 'moenas[ray]'"."""
    try:
        import ray
    except ImportError:
        raise UserError(f"{what} needs Ray, which is not installed here: {RAY_EXTRA}") from None
    return ray


def check_reachable(address: str, flag: str, timeout_s: float = 5.0) -> None:
    """UserError unless something listens at a ``HOST:PORT`` (or ``ray://HOST:PORT``) address;
    ``auto`` and other forms are left to Ray. ``flag`` names the option in the message."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise UserError(
            f"{flag} {address}: no Ray cluster answers there ({e.strerror or type(e).__name__}); "
            "start one with: ray start --head --port PORT"
        ) from None
