"""
One resource sample from one document of the engine's stats stream
(``GET /containers/{id}/stats?stream=1``), with the formulas of
lifecycle.md §13.2 (those of the ``docker stats`` CLI):

* ``memory_bytes``: ``memory_stats.usage`` less the inactive page cache
  (``stats.total_inactive_file`` on cgroup v1, ``stats.inactive_file`` on
  v2) when that is smaller than the usage;
* ``memory_limit_bytes``: ``memory_stats.limit``;
* ``cpu_absolute``: Δ container CPU time / Δ system CPU time × 100 × online
  CPUs (``percpu_usage``'s length when ``online_cpus`` is 0), 3 decimals;
  100 is one busy core;
* ``network``: ``rx_bytes``/``tx_bytes`` summed over ``networks``.

``uptime`` is not in the document: the environment adds it from the
container's start time.  Podman sends a document every 5 s (Docker every
second) and its first one carries a ``precpu_stats`` without
``online_cpus``; both shapes give the same numbers here.
"""

from __future__ import annotations

from typing import Any, Mapping


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _number(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return int(value)


def memory_bytes(memory: Mapping[str, Any]) -> int:
    """
    Usage without the inactive page cache.
    """
    usage = _number(memory.get("usage"))
    inner = _mapping(memory.get("stats"))
    for key in ("total_inactive_file", "inactive_file"):
        if key in inner:
            inactive = _number(inner.get(key))
            if inactive < usage:
                return usage - inactive
    return usage


def cpu_absolute(document: Mapping[str, Any]) -> float:
    """
    The CPU use since the previous document, 100 = one core.
    """
    cpu = _mapping(document.get("cpu_stats"))
    previous = _mapping(document.get("precpu_stats"))
    used = _number(_mapping(cpu.get("cpu_usage")).get("total_usage"))
    used_before = _number(_mapping(previous.get("cpu_usage")).get("total_usage"))
    system = _number(cpu.get("system_cpu_usage"))
    system_before = _number(previous.get("system_cpu_usage"))
    cpus = _number(cpu.get("online_cpus"))
    if cpus == 0:
        percpu = _mapping(cpu.get("cpu_usage")).get("percpu_usage")
        cpus = len(percpu) if isinstance(percpu, list) else 0
    cpu_delta = used - used_before
    system_delta = system - system_before
    if system_delta <= 0 or cpu_delta <= 0:
        return 0.0
    value = cpu_delta / system_delta * 100.0
    if cpus > 0:
        value *= cpus
    return round(value, 3)


def network(document: Mapping[str, Any]) -> dict[str, int]:
    """
    Received and sent bytes over every interface.
    """
    rx = tx = 0
    for interface in _mapping(document.get("networks")).values():
        interface = _mapping(interface)
        rx += _number(interface.get("rx_bytes"))
        tx += _number(interface.get("tx_bytes"))
    return {"rx_bytes": rx, "tx_bytes": tx}


def sample(document: Mapping[str, Any], *, uptime_ms: int) -> dict[str, Any]:
    """
    The ``stats`` sample the environment listener gets.
    """
    memory = _mapping(document.get("memory_stats"))
    return {
        "memory_bytes": memory_bytes(memory),
        "memory_limit_bytes": _number(memory.get("limit")),
        "cpu_absolute": cpu_absolute(document),
        "network": network(document),
        "uptime": uptime_ms,
    }
