"""Figures -> verdicts, a plain-text table and a JSON file.

Nothing here measures: the sections hand over numbers, this module compares them with their
targets and lays them out. ASCII only, so a CI log in the C locale prints it unchanged.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

TargetKind = Literal["ratio_at_most", "ratio_at_least", "value_at_most", "info"]
TARGET_KINDS: tuple[TargetKind, ...] = ("ratio_at_most", "ratio_at_least", "value_at_most", "info")
FLAT_VALUE_MAX = 300
FLAT_KEYS_MAX = 12


@dataclass(frozen=True)
class Target:
    """What a figure must satisfy: a ratio to its baseline, or an absolute bound on the value."""

    kind: TargetKind
    limit: float = 0.0

    def text(self, unit: str) -> str:
        if self.kind == "ratio_at_most":
            return f"<= {self.limit:g}x"
        if self.kind == "ratio_at_least":
            return f">= {self.limit:g}x"
        if self.kind == "value_at_most":
            return f"< {self.limit:g} {unit}".rstrip()
        return "-"

    def met(self, value: float | None, ratio: float | None) -> bool | None:
        if self.kind == "ratio_at_most":
            return None if ratio is None else ratio <= self.limit
        if self.kind == "ratio_at_least":
            return None if ratio is None else ratio >= self.limit
        if self.kind == "value_at_most":
            return None if value is None else value < self.limit
        return None


INFO = Target("info")


@dataclass(frozen=True)
class Check:
    """One row of the table: importd's figure, the baseline's, and the verdict.

    For times the ratio is importd/baseline (lower is better); for throughputs it is
    importd/baseline too (higher is better); the target says which way it must go."""

    name: str
    value: float | None
    unit: str
    target: Target = INFO
    baseline: float | None = None
    baseline_name: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def passed(self) -> bool | None:
        return self.target.met(self.value, self.ratio)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["target"] = self.target.text(self.unit)
        out["target_kind"] = self.target.kind
        out["target_limit"] = self.target.limit
        out["ratio"] = self.ratio
        out["passed"] = self.passed
        return out


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), pct in [0, 100]."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * pct / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "ms":
        return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"
    if unit == "MiB/s":
        return f"{value:,.0f} MiB/s"
    if unit == "MB":
        return f"{value:.1f} MB"
    return f"{value:g} {unit}".rstrip()


def verdict(check: Check) -> str:
    if check.target.kind == "info":
        return ""
    if check.passed is None:
        return "n/a"
    return "ok" if check.passed else "MISSED"


def table(checks: Iterable[Check]) -> str:
    head = ("measurement", "importd", "baseline", "ratio", "target", "verdict")
    rows: list[tuple[str, ...]] = [head]
    notes: list[str] = []
    for c in checks:
        base = ""
        if c.baseline is not None:
            base = f"{c.baseline_name} {fmt_value(c.baseline, c.unit)}".strip()
        ratio = f"{c.ratio:.2f}x" if c.ratio is not None else ""
        rows.append((c.name, fmt_value(c.value, c.unit), base, ratio, c.target.text(c.unit), verdict(c)))
        if c.note:
            notes.append(f"  - {c.name.strip()}: {c.note}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in range(1, len(row))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    if notes:
        lines.append("")
        lines.append("notes:")
        lines.extend(notes)
    return "\n".join(lines)


def flat_lines(figures: Mapping[str, Any], prefix: str = "") -> list[str]:
    """`key.sub: value` lines for sections that hand over a plain dict of figures."""
    out: list[str] = []
    items = list(figures.items())
    if len(items) > FLAT_KEYS_MAX:
        out.append(f"{prefix}(first {FLAT_KEYS_MAX} of {len(items)} keys; all in the JSON)")
        items = items[:FLAT_KEYS_MAX]
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.extend(flat_lines(value, name + "."))
        elif isinstance(value, float):
            out.append(f"{name}: {value:.4g}")
        else:
            text = str(value)
            if len(text) > FLAT_VALUE_MAX:  # long lists stay whole in the JSON
                text = text[:FLAT_VALUE_MAX] + f"... ({len(text):,} chars, see the JSON)"
            out.append(f"{name}: {text}")
    return out


# ----- the machine -----------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return None


def _fs_type(path: Path) -> str:
    """The filesystem type of the mount holding `path` (longest matching mount point)."""
    best, fstype = "", "unknown"
    target = str(path.resolve())
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            mnt = parts[1].encode().decode("unicode_escape")
            if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                best, fstype = mnt, parts[2]
    except OSError:
        pass
    return fstype


def _tool_version(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else None


def machine(tmp: Path) -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    try:
        import blake3

        blake3_version = str(getattr(blake3, "__version__", "?"))
    except ImportError:
        blake3_version = "not installed"
    return {
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "mem_total_gib": _mem_total_gib(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "tmp": str(tmp),
        "tmp_fs": _fs_type(tmp),
        "b3sum": _tool_version(["b3sum", "--version"]),
        "find": _tool_version(["find", "--version"]),
        "blake3_py": blake3_version,
    }


def machine_line(m: Mapping[str, Any]) -> str:
    mem = m.get("mem_total_gib")
    mem_s = f"{mem:.1f} GiB RAM" if isinstance(mem, float) else "RAM unknown"
    return (
        f"machine: nproc {m['nproc']} ({m['cpu_model']}), {mem_s}, Linux {m['kernel']}, "
        f"Python {m['python']}, temp dir {m['tmp']} on {m['tmp_fs']}, {m['b3sum'] or 'no b3sum'}"
    )


def write_json(path: Path, results: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)


__all__ = [
    "INFO",
    "TARGET_KINDS",
    "Check",
    "Target",
    "flat_lines",
    "machine",
    "machine_line",
    "median",
    "percentile",
    "table",
    "write_json",
]
