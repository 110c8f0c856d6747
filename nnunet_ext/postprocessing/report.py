"""What :func:`~.determine.determine_postprocessing` found, as files: the pipeline JSON, a
Markdown report (the chosen steps and what each changed, every candidate tried), the full
result as JSON and, where expressible, nnU-Net's ``postprocessing.pkl``."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from .labels import DatasetLabels
from .nnunet_pkl import NotExpressible, write_nnunet_pkl
from .pipeline import save_pipeline

#: files written by :func:`write_determination`
OUTPUT_FILES = ("pipeline.json", "report.md", "determination.json", "postprocessing.pkl")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def steps_table(rows: Sequence[dict], metric: str, with_status: bool) -> List[str]:
    """Markdown table of candidate rows (``Determination.tried`` entries), one line per row."""
    header = ["#", "class/region", "step", "parameters", f"{metric} (class) before → after",
              f"{metric} (all) before → after", "cases changed", "voxels removed", "voxels added"]
    if with_status:
        header.append("decision")
    body = []
    for k, r in enumerate(rows, 1):
        op = r["op"] + (" (from probabilities)" if r["new_input"] == "probabilities" else "")
        line = [k if not with_status else r["round"], r["target"], op, r["parameters"],
                f"{r['target_before']:.4f} → {r['target_after']:.4f}",
                f"{r['all_before']:.4f} → {r['all_after']:.4f}",
                r["cases_changed"], r["removed"], r["added"]]
        if with_status:
            line.append(r["reason"])
        body.append(line)
    return _md_table(header, body)


def render_report(det, pkl_note: Optional[str] = None) -> str:
    """Markdown report: the chosen steps (what each changed), all tried candidates, notes."""
    lines = ["# Post-processing determined on cross-validation", "",
             f"{det.n_cases} cases; objective: **{det.metric}** (mean over cases). A step is "
             f"accepted when it raises the mean of its classes by more than {det.margin:g}, "
             f"lowers no class by more than {det.margin:g} and raises the mean over all classes"
             + (f", and leaves no class's mean Dice more than {det.max_dice_drop:g} below its "
                "value before post-processing (Dice guard)" if det.max_dice_drop is not None else "")
             + (f", and no class's mean clDice more than {det.max_cldice_drop:g} below it (clDice guard)"
                if getattr(det, "max_cldice_drop", None) is not None else "")
             + ". Probabilities used: "
             f"{'yes' if det.probabilities else 'no'}.", "",
             "## Chosen steps", ""]
    if det.accepted:
        lines += steps_table(det.accepted, det.metric, with_status=False)
    else:
        lines.append("None: no candidate improved the objective by more than the margin.")
    lines += ["", "Mean per class/region before → after the whole pipeline:", ""]
    lines += _md_table(["class/region", f"{det.metric} before", f"{det.metric} after"],
                       [[n, f"{det.baseline[n]:.4f}", f"{det.final[n]:.4f}"] for n in det.baseline])
    lines += ["", "## All candidates", "",
              "Rounds are evaluated on the predictions after the steps accepted before them.", ""]
    lines += steps_table(det.tried, det.metric, with_status=True)
    notes = list(det.notes) + ([pkl_note] if pkl_note else [])
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_determination(det, output_folder: str, dataset_json: Union[str, dict],
                        overwrite: bool = False) -> Dict[str, str]:
    """Write ``pipeline.json``, ``report.md``, ``determination.json`` and, where expressible,
    nnU-Net's ``postprocessing.pkl`` into ``output_folder``. All files are written to a
    temporary folder first and moved into place together; existing files are only replaced with
    ``overwrite``.

    Returns
    -------
    dict file kind -> path (``pkl`` only when written).
    """
    labels = DatasetLabels.from_dataset_json(dataset_json)
    targets = {n: os.path.join(output_folder, n) for n in OUTPUT_FILES}
    existing = [p for p in targets.values() if os.path.exists(p)]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} exist(s) (use overwrite to replace)")
    os.makedirs(output_folder, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".determine-", dir=output_folder)
    written: Dict[str, str] = {}
    try:
        save_pipeline(det.pipeline, os.path.join(tmp, "pipeline.json"))
        try:
            write_nnunet_pkl(det.pipeline, labels, os.path.join(tmp, "postprocessing.pkl"))
            pkl_note = ("postprocessing.pkl: the same steps for nnU-Net's "
                        "`nnUNetv2_apply_postprocessing -pp_pkl_file`.")
        except NotExpressible as e:
            pkl_note = f"no postprocessing.pkl for nnU-Net: {e}"
        with open(os.path.join(tmp, "report.md"), "w") as f:
            f.write(render_report(det, pkl_note))
        with open(os.path.join(tmp, "determination.json"), "w") as f:
            json.dump({**asdict(det), "nnunet_pkl": pkl_note}, f, indent=2, default=_json_default)
        for name, path in targets.items():
            src = os.path.join(tmp, name)
            if os.path.isfile(src):
                os.replace(src, path)
                written[name.split(".")[0] if name != "postprocessing.pkl" else "pkl"] = path
            elif os.path.exists(path) and name == "postprocessing.pkl":
                os.remove(path)  # a stale pkl must not contradict the new pipeline
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return written


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
