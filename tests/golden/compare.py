"""Compares two JSON values figure by figure: numbers to 1e-9, strings and lists exactly, except the keys
that hold a time, a host, a Ray id or a written file, and absolute paths (they differ from run to run)."""

from __future__ import annotations

import math
from typing import Any

TOL = 1e-9
# Keys whose values differ from run to run by nature: clocks, hosts, Ray's ids, where files were written.
VOLATILE = frozenset({"seconds", "wall_seconds", "started_at", "ended_at", "hostname", "node", "device",
                      "trial_id", "plots", "report", "tables", "study", "versions"})


def _volatile(key: str) -> bool:
    return key in VOLATILE


def differences(want: Any, got: Any, where: str = "$") -> list[str]:
    """Every place where ``got`` differs from ``want``, as 'path: want X, got Y' (empty when equal)."""
    if isinstance(want, dict) and isinstance(got, dict):
        out: list[str] = []
        for key in sorted(set(want) | set(got)):
            if _volatile(str(key)):
                continue
            if key not in want or key not in got:
                out.append(f"{where}.{key}: only in {'want' if key in want else 'got'}")
                continue
            out += differences(want[key], got[key], f"{where}.{key}")
        return out
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            return [f"{where}: {len(want)} items wanted, {len(got)} got"]
        return [d for i, (w, g) in enumerate(zip(want, got)) for d in differences(w, g, f"{where}[{i}]")]
    if isinstance(want, bool) or isinstance(got, bool) or not isinstance(want, (int, float)) \
            or not isinstance(got, (int, float)):
        if isinstance(want, str) and isinstance(got, str) and want.startswith("/") and got.startswith("/"):
            return []  # an absolute path: where a run wrote, not what it found
        return [] if want == got else [f"{where}: want {want!r}, got {got!r}"]
    if math.isnan(want) and math.isnan(got):
        return []
    return [] if abs(want - got) <= TOL else [f"{where}: want {want!r}, got {got!r}"]
