"""The summary printed (and saved as ``conversion_report.json``) at the end of a conversion."""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class CaseResult:
    """What one converted case contributes to the report.

    ``spacing`` is in the axis order named by the report's ``spacing_axes``.
    """

    case_id: str
    spacing: tuple
    shape: tuple
    label_counts: dict = field(default_factory=dict)
    is_test: bool = False
    bytes_read: int = 0
    notes: list = field(default_factory=list)


@dataclass
class ConversionReport:
    """Summary of a finished conversion."""

    dataset_name: str
    dataset_folder: str
    num_training: int
    num_test: int
    spacing_axes: str
    spacings: dict
    spacing_outliers: list
    label_names: dict
    label_counts: dict
    cases_per_label: dict
    skipped: list
    notes: list
    seconds: float
    megabytes_read: float
    splits: str | None = None
    warnings: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        """Human-readable multi-line summary."""
        lines = [f"Converted {self.dataset_name}: {self.num_training} training and {self.num_test} test cases "
                 f"in {self.seconds:.1f} s ({self.megabytes_read:.2f} MB read)",
                 f"  folder: {self.dataset_folder}",
                 f"  spacings ({self.spacing_axes}), cases:"]
        for sp, n in sorted(self.spacings.items(), key=lambda kv: -kv[1]):
            lines.append(f"    {sp}: {n}")
        if self.spacing_outliers:
            lines.append("  spacing outliers (nnU-Net resamples every case to the median spacing):")
            for o in self.spacing_outliers:
                verb = "enlarged" if o["enlarged"] else "shrunk"
                lines.append(f"    {o['case']}: spacing {o['spacing']} vs median {o['median']} -> "
                             f"{verb} x{o['max_zoom']:.1f} along axis {o['axis']}")
        lines.append("  labels (voxels, cases):")
        for lab, n in sorted(self.label_counts.items(), key=lambda kv: int(kv[0])):
            name = self.label_names.get(str(lab), self.label_names.get(int(lab), "?"))
            lines.append(f"    {lab} {name}: {n} voxels in {self.cases_per_label.get(lab, 0)} cases")
        if self.splits:
            lines.append(f"  splits: {self.splits}")
        for s in self.skipped:
            lines.append(f"  skipped: {s}")
        for s in self.notes:
            lines.append(f"  note: {s}")
        for s in self.warnings:
            lines.append(f"  warning: {s}")
        return "\n".join(lines)


def find_spacing_outliers(spacings: dict[str, tuple], factor: float = 2.0) -> list[dict]:
    """Cases whose spacing differs from the median by more than ``factor`` along some axis.

    nnU-Net resamples every training case to the median spacing of the dataset, so such a case is
    enlarged (or shrunk) by the ratio of the two; a 5x in-plane zoom of a 512x512 slice costs 25x the
    memory and rarely helps training.

    Examples
    --------
    >>> out = find_spacing_outliers({"a": (1.0, 1.0), "b": (1.0, 1.0), "c": (5.0, 1.0)})
    >>> out[0]["case"], out[0]["axis"]
    ('c', 0)
    """
    if not spacings:
        return []
    arr = np.array(list(spacings.values()), dtype=float)
    median = np.median(arr, axis=0)
    out = []
    for case, sp in sorted(spacings.items()):
        ratio = np.asarray(sp, dtype=float) / median
        zoom = np.maximum(ratio, 1 / ratio)
        axis = int(np.argmax(zoom))
        if zoom[axis] > factor:
            out.append({"case": case, "spacing": [round(float(s), 4) for s in sp],
                        "median": [round(float(m), 4) for m in median], "axis": axis,
                        "max_zoom": round(float(zoom[axis]), 2), "enlarged": bool(ratio[axis] > 1)})
    return out


def build_report(results: list[CaseResult], *, dataset_name: str, dataset_folder: str, spacing_axes: str,
                 label_names: dict, skipped: list, seconds: float, splits: str | None = None) -> ConversionReport:
    """Aggregate per-case results into a :class:`ConversionReport`."""
    train = [r for r in results if not r.is_test]
    spacing_counter = Counter(str(tuple(round(float(s), 4) for s in r.spacing)) for r in results)
    label_counts: Counter = Counter()
    cases_per_label: Counter = Counter()
    for r in train:
        for lab, n in r.label_counts.items():
            label_counts[int(lab)] += int(n)
            cases_per_label[int(lab)] += 1
    notes = [f"{r.case_id}: {n}" for r in results for n in r.notes]
    return ConversionReport(
        dataset_name=dataset_name, dataset_folder=dataset_folder,
        num_training=len(train), num_test=len(results) - len(train), spacing_axes=spacing_axes,
        spacings=dict(spacing_counter),
        spacing_outliers=find_spacing_outliers({r.case_id: tuple(r.spacing) for r in train}),
        label_names={str(k): v for k, v in label_names.items()},
        label_counts=dict(sorted(label_counts.items())), cases_per_label=dict(sorted(cases_per_label.items())),
        skipped=list(skipped), notes=notes, seconds=round(seconds, 3),
        megabytes_read=round(sum(r.bytes_read for r in results) / 1e6, 3), splits=splits)
