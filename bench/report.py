"""Results of a benchmark run: per-round values per target, medians, ratios against references
measured in the same round, a markdown table and a JSON file.

A ratio is taken round by round (each round's value over the same round's reference), then
the median of those is reported: a busy moment slows both sides of one ratio.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.procs import ROOT, load_average

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    key: str
    label: str
    unit: str  # "s", "MiB/s", "req/s", "MiB", "ms", "bytes"
    better: str = "lower"  # or "higher": how to read a ratio
    values: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, object] = field(default_factory=dict)

    def add(self, target: str, value: float) -> None:
        self.values.setdefault(target, []).append(value)

    def median(self, target: str) -> float | None:
        values = self.values.get(target)
        return statistics.median(values) if values else None

    def ratio(self, target: str, reference: str) -> float | None:
        """Median over rounds of value / reference (rounds both sides measured)."""
        ours, ref = self.values.get(target) or [], self.values.get(reference) or []
        pairs = [(o / r) for o, r in zip(ours, ref, strict=False) if r]
        return statistics.median(pairs) if pairs else None


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "bytes":
        return f"{value / (1 << 20):,.1f} MiB" if value >= 1 << 20 else f"{value:,.0f} B"
    if unit == "ms":
        return f"{value:.1f} ms"
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.1f} {unit}"


def table(rows: list[Row], targets: list[str], reference: str | None, versus: str | None) -> str:
    """A markdown table: one column per target (value and ratio to `reference`), then each
    other target's ratio to `versus`."""
    others = [t for t in targets if versus and t not in (versus, reference)]
    head = ["row", *targets] + [f"{t} / {versus}" for t in others]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [f"{row.label} ({row.better} is better)" if row.better else row.label]
        for target in targets:
            cell = fmt(row.median(target), row.unit)
            if reference and target != reference and row.median(reference):
                ratio = row.ratio(target, reference)
                cell += f" (**{ratio:.2f}**)" if ratio is not None else ""
            elif reference and target == reference and row.median(target):
                cell += " (1.00)"
            cells.append(cell)
        for target in others:
            ratio = row.ratio(target, versus) if versus else None
            cells.append(f"**{ratio:.2f}**" if ratio is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def environment() -> dict[str, object]:
    def out(*cmd: str) -> str:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=10)
            return (proc.stdout + proc.stderr).strip()
        except OSError:
            return "?"

    from importlib.metadata import version

    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "commit": out("git", "rev-parse", "--short", "HEAD"),
        # What is measured: the last commit that touched the package, and local edits to it.
        "condaproxy_commit": out("git", "log", "-1", "--format=%h", "--", "condaproxy"),
        "condaproxy_dirty": bool(out("git", "status", "--porcelain", "--", "condaproxy")),
        "cpus": out("nproc"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": out("nginx", "-v"),
        "py-rattler": version("py-rattler"),
        "load_average": load_average(),
    }


def save(name: str, args: dict[str, object], env: dict[str, object], rows: list[Row]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y-%m-%dT%H%M')}.json"
    body = {"args": args, "environment": env, "rows": [asdict(r) for r in rows]}
    path.write_text(json.dumps(body, indent=1, default=str) + "\n")
    return path
