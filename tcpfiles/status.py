"""What a server is doing now, for a person: ``/status`` on the ``--metrics`` endpoint, and
``tcpfiles status`` that shows it.

:func:`status_of` walks each behaviour's connections (the kernel's trackers): a connection whose
protocol has an ``activity()`` method that returns a dict (the files server's, while a body is
going out or coming in) is a transfer in flight.  :func:`format_status` turns that into lines.
No library beyond the standard one, so the CLI can show a status without prometheus_client.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

__all__ = [
    "STATUS_PREFIX",
    "format_status",
    "merge_statuses",
    "status_file",
    "status_of",
    "transfers_of",
    "workers_status",
]

#: How each worker's status file in a multi-process directory is named: ``status_PID.json``.
STATUS_PREFIX = "status_"


def transfers_of(behaviour: str, tracker: Any) -> list[dict[str, Any]]:
    """The transfers in flight on ``tracker``'s connections, each with its ``rate`` (bytes a
    second since the request: bytes so far / seconds)."""
    found = []
    for connection in list(getattr(tracker, "active", ())):
        protocol = getattr(connection, "wrappedProtocol", connection)
        activity = getattr(protocol, "activity", None)
        doing = activity() if activity is not None else None
        if doing is None:
            continue
        transfer = {"peer": "?", "request": "", "bytes": 0, "size": 0, "seconds": 0.0, **doing}
        seconds = transfer["seconds"]
        rate = transfer["bytes"] / seconds if seconds > 0 else 0.0
        found.append({"behaviour": behaviour, **transfer, "rate": rate})
    return found


def status_of(
    trackers: Mapping[str, Any], gauges: Mapping[str, float], now: float
) -> dict[str, Any]:
    """``{"time", "connections": {behaviour: open}, "transfers": [...], "gauges": {...}}``:
    connections per behaviour, the transfers in flight (:func:`transfers_of`), and the gauges
    read now (uploads in flight, chat users, files being hashed)."""
    transfers: list[dict[str, Any]] = []
    for behaviour, tracker in trackers.items():
        transfers += transfers_of(behaviour, tracker)
    return {
        "time": now,
        "connections": {
            behaviour: len(getattr(tracker, "active", ()))
            for behaviour, tracker in trackers.items()
        },
        "transfers": transfers,
        "gauges": dict(gauges),
    }


def merge_statuses(statuses: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """One status for several processes (``--workers``), from each one's, by pid: connections
    and gauges summed, every transfer (with its ``worker`` pid), the latest ``time``, and
    ``workers``, how many processes it sums."""
    connections: dict[str, int] = {}
    gauges: dict[str, float] = {}
    transfers: list[dict[str, Any]] = []
    for pid, status in sorted(statuses.items()):
        for name, count in status.get("connections", {}).items():
            connections[name] = connections.get(name, 0) + count
        for name, value in status.get("gauges", {}).items():
            gauges[name] = gauges.get(name, 0) + value
        transfers += [{**transfer, "worker": pid} for transfer in status.get("transfers", [])]
    return {
        "time": max((status.get("time", 0.0) for status in statuses.values()), default=0.0),
        "workers": len(statuses),
        "connections": connections,
        "transfers": transfers,
        "gauges": gauges,
    }


def status_file(pid: int) -> str:
    """The name of process ``pid``'s status file in a multi-process directory."""
    return f"{STATUS_PREFIX}{pid}.json"


def workers_status(directory: str) -> dict[str, Any]:
    """The parent's ``/status``: every worker's last status in ``directory`` (at most
    a second old under ``twistd --workers``), merged (:func:`merge_statuses`)."""
    statuses: dict[int, Any] = {}
    for name in os.listdir(directory):
        if name.startswith(STATUS_PREFIX) and name.endswith(".json"):
            try:
                with open(os.path.join(directory, name), encoding="utf-8") as text:
                    statuses[int(name[len(STATUS_PREFIX) : -len(".json")])] = json.load(text)
            except (OSError, ValueError):  # removed meanwhile, or not ours
                continue
    return merge_statuses(statuses)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover - the loop returns


def format_status(status: Mapping[str, Any]) -> str:
    """The lines ``tcpfiles status`` prints for a ``/status`` answer."""
    connections = status.get("connections", {})
    lines = [
        "connections: "
        + (", ".join(f"{name} {count}" for name, count in connections.items()) or "none")
    ]
    if "workers" in status:
        lines.insert(0, f"workers: {status['workers']}")
    transfers = status.get("transfers", [])
    lines.append(f"transfers in flight: {len(transfers)}")
    for t in transfers:
        lines.append(
            f"  {t['behaviour']} {t['peer']} {t['request']}: {_size(t['bytes'])} of "
            f"{_size(t['size'])} in {t['seconds']:.1f} s ({_size(t['rate'])}/s)"
        )
    for name, value in sorted(status.get("gauges", {}).items()):
        label = name.removeprefix("tcpfiles_").replace("_", " ")
        lines.append(f"{label}: {value:g}")
    return "\n".join(lines) + "\n"
