"""The benchmark's results: rows of the benchmark table, latency samples, and their JSON, Markdown and plots."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    """One line of the table: an operation measured against its baseline, and whether it meets the target."""

    operation: str
    measured: str
    baseline: str
    target: str
    ratio: float | None = None
    passed: bool | None = None
    note: str = ""

    @property
    def mark(self) -> str:
        """'pass', 'short' or '—' (informational)."""
        return "—" if self.passed is None else ("pass" if self.passed else "short")


@dataclass(frozen=True)
class Section:
    """A table of its own below the main one (e.g. the storage requests of a scenario, by kind)."""

    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def markdown(self) -> str:
        """The section as a Markdown heading and table."""
        lines = [f"### {self.title}", "", "| " + " | ".join(self.header) + " |",
                 "|" + "|".join("---" if index == 0 else "---:" for index in range(len(self.header))) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"


@dataclass
class Results:
    """Everything one run measured."""

    options: dict[str, object] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    # plot title -> series label -> latencies in ms
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)

    def add(self, row: Row) -> None:
        """Add a row and print it as it lands."""
        self.rows.append(row)
        ratio = f"{row.ratio:.2f}×" if row.ratio is not None else ""
        print(f"  {row.operation}: {row.measured} | {row.baseline} | {ratio} {row.target} → {row.mark}", flush=True)

    def markdown(self) -> str:
        """The table (and notes) as Markdown."""
        lines = ["| operation | measured | baseline (same run) | ratio | target | |", "|---|---|---|---:|---|---|"]
        for row in self.rows:
            ratio = f"{row.ratio:.2f}×" if row.ratio is not None else ""
            operation = f"{row.operation} ({row.note})" if row.note else row.operation
            lines.append(f"| {operation} | {row.measured} | {row.baseline} | {ratio} | {row.target} | {row.mark} |")
        if self.notes:
            lines += [""] + [f"- {note}" for note in self.notes]
        for section in self.sections:
            lines += ["", section.markdown().rstrip("\n")]
        return "\n".join(lines) + "\n"

    def write(self, directory: Path = RESULTS_DIR, name: str = "latest") -> list[Path]:
        """Write {name}.json, {name}.md and one PNG per latency plot; return the paths."""
        directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        machine = f"{platform.machine()}, {_cpus()} CPUs, Python {platform.python_version()}"
        document = {"when": stamp, "machine": machine,
                    "options": self.options, "rows": [asdict(row) | {"mark": row.mark} for row in self.rows],
                    "notes": self.notes, "sections": [asdict(section) for section in self.sections],
                    "samples_ms": self.samples}
        paths = [directory / f"{name}.json", directory / f"{name}.md"]
        paths[0].write_text(json.dumps(document, indent=1, default=str))
        header = f"Measured {stamp} on {document['machine']}; options: " + \
            ", ".join(f"{key}={value}" for key, value in self.options.items())
        paths[1].write_text(f"{header}\n\n{self.markdown()}")
        paths += self._plots(directory, name)
        return paths

    def _plots(self, directory: Path, name: str) -> list[Path]:
        if not self.samples:
            return []
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        plots = [(title, series) for title, series in self.samples.items() if any(series.values())]
        columns = 2
        rows = (len(plots) + columns - 1) // columns
        figure, axes = plt.subplots(rows, columns, figsize=(12, 3.2 * rows), squeeze=False)
        for axis, (title, series) in zip(axes.flat, plots, strict=False):
            labels = [label for label, values in series.items() if values]
            axis.boxplot([series[label] for label in labels], vert=False, whis=(5, 95), showfliers=True,
                         flierprops={"markersize": 2})
            axis.set_yticks(range(1, len(labels) + 1), labels, fontsize=7)
            axis.set_xscale("log")
            axis.set_xlabel("ms (log scale); box: quartiles, whiskers: 5th-95th percentile", fontsize=7)
            axis.set_title(title, fontsize=9)
            axis.tick_params(axis="x", labelsize=7)
        for axis in list(axes.flat)[len(plots):]:
            axis.set_visible(False)
        figure.tight_layout()
        path = directory / f"{name}-latency.png"
        figure.savefig(path, dpi=80)
        plt.close(figure)
        return [path]


def _cpus() -> int:
    import os
    return os.cpu_count() or 0
