"""The demo: stock nnU-Net against the flagship pipeline on a synthetic MiniVess-like dataset, end to end.

The flagship pipeline is TopoTrainer followed by connectivity-aware post-processing (hysteresis thresholds,
bridging of gaps between component end points through the saved probabilities) chosen on the fold's
validation predictions by ``nnunet-ext postprocess determine --metric topology``. Everything runs through
the stock nnU-Net commands (``nnUNetv2_plan_and_preprocess``, ``nnUNetv2_train --npz``, ``nnUNetv2_predict``
with its default mirroring TTA and ``--save_probabilities``) in a working folder that holds ``nnUNet_raw``,
``nnUNet_preprocessed``, ``nnUNet_results``, the predictions, the logs and the results table, all left in
place for inspection. The table reports Dice, clDice and the Betti-0 error (wrong number of connected
components per case) of stock nnU-Net, TopoTrainer, and TopoTrainer + post-processing.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from nnunet_ext.discovery import trainer_folder
from nnunet_ext.nnunet_commands import run_nnunet
from nnunet_ext.postprocessing.cross_validation import describe_pipeline, determine_and_apply

DEMO_DATASET_ID = 950
DEMO_MARKER = ".nnunet_ext_demo"
#: metric key in the evaluation summary → column title
METRICS = {"dice": "Dice", "cldice": "clDice", "betti_0_error": "Betti-0 error"}


@dataclass(frozen=True)
class DemoSettings:
    workdir: Path
    device: str = "cpu"
    epochs: int = 2
    iterations: int = 12
    n_train: int = 8
    n_test: int = 3
    shape: tuple[int, int, int] = (20, 48, 48)
    spacing: tuple[float, float, float] = (2.0, 1.0, 1.0)  # anisotropic, as two-photon stacks are
    seed: int = 0
    dataset_id: int = DEMO_DATASET_ID
    overwrite: bool = False

    @property
    def trainers(self) -> tuple[str, str]:
        budget = f"{self.epochs}epoch{'' if self.epochs == 1 else 's'}_{self.iterations}iters"
        return f"nnUNetTrainer_{budget}", f"TopoTrainer_{budget}"


def _environment(workdir: Path) -> dict:
    env = dict(os.environ)
    env.update(
        nnUNet_raw=str(workdir / "nnUNet_raw"),
        nnUNet_preprocessed=str(workdir / "nnUNet_preprocessed"),
        nnUNet_results=str(workdir / "nnUNet_results"),
        nnUNet_extTrainer=os.pathsep.join(p for p in (str(trainer_folder()), os.environ.get("nnUNet_extTrainer")) if p),
    )
    env.setdefault("nnUNet_n_proc_DA", str(min(4, os.cpu_count() or 1)))
    env.setdefault("nnUNet_compile", "false")  # compiling costs minutes, a short demo never earns them back
    return env


def _prepare_workdir(settings: DemoSettings) -> None:
    workdir = settings.workdir
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / DEMO_MARKER).exists():
            raise FileExistsError(f"{workdir} exists and is not a demo folder; choose another --workdir "
                                  f"(nothing was changed)")
        if not settings.overwrite:
            raise FileExistsError(f"{workdir} holds an earlier demo run; pass --overwrite to replace it or "
                                  f"choose another --workdir (nothing was changed)")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / DEMO_MARKER).write_text("written by nnunet-ext demo\n")


def _step(number: int, total: int, text: str) -> float:
    print(f"\n[{number}/{total}] {text}", flush=True)
    return time.perf_counter()


def run_demo(settings: DemoSettings) -> dict:
    """Run the demo and return ``{trainer: {"dice": mean, "cldice": mean, ...}}`` (also written to
    ``<workdir>/results.json`` and printed as a table)."""
    from nnunet_ext.evaluation.folder import evaluate_folders
    from nnunet_ext.synthetic import write_synthetic_dataset

    settings = DemoSettings(**{**settings.__dict__, "workdir": Path(settings.workdir).resolve()})
    workdir = settings.workdir
    _prepare_workdir(settings)
    env = _environment(workdir)
    logs = workdir / "logs"
    did = settings.dataset_id
    total = 4 + 2 * len(settings.trainers)
    started = time.perf_counter()

    _step(1, total, f"writing a synthetic vessel dataset ({settings.n_train} training + {settings.n_test} test "
                    f"volumes of {'x'.join(map(str, settings.shape))} voxels, spacing {settings.spacing})")
    dataset = write_synthetic_dataset(env["nnUNet_raw"], did, "labels", name="DemoVessels",
                                      n_train=settings.n_train, n_test=settings.n_test, shape=settings.shape,
                                      spacing=settings.spacing, seed=settings.seed)
    _step(2, total, "nnUNetv2_plan_and_preprocess (with nnU-Net's dataset integrity check)")
    run_nnunet(["nnUNetv2_plan_and_preprocess", "-d", did, "-c", "3d_fullres", "--verify_dataset_integrity",
                "-np", min(2, os.cpu_count() or 1), "-npfp", min(2, os.cpu_count() or 1)],
               logs / "plan_and_preprocess.log", env)

    step = 2
    predictions = workdir / "predictions"
    for trainer in settings.trainers:
        step += 1
        _step(step, total, f"nnUNetv2_train {did} 3d_fullres 0 -tr {trainer} -device {settings.device} --npz")
        run_nnunet(["nnUNetv2_train", did, "3d_fullres", 0, "-tr", trainer, "-device", settings.device, "--npz"],
                   logs / f"train_{trainer}.log", env)
        step += 1
        _step(step, total, f"nnUNetv2_predict with mirroring TTA → predictions/{trainer}")
        run_nnunet(["nnUNetv2_predict", "-i", dataset / "imagesTs", "-o", predictions / trainer, "-d", did,
                    "-c", "3d_fullres", "-f", 0, "-tr", trainer, "-device", settings.device, "--save_probabilities"],
                   logs / f"predict_{trainer}.log", env)

    flagship = settings.trainers[1]
    step += 1
    _step(step, total, f"nnunet-ext postprocess determine --metric topology on {flagship}'s validation predictions, "
                       f"then postprocess apply → predictions/{flagship}+pp")
    results_folder = Path(env["nnUNet_results"]) / dataset.name / f"{flagship}__nnUNetPlans__3d_fullres"
    chosen = determine_and_apply(results_folder, predictions / flagship, predictions / f"{flagship}+pp",
                                 results_folder / "postprocessing_ext", logs, folds=["0"], env=env)
    print(f"  chosen steps: {describe_pipeline(chosen) if chosen.get('steps') else 'none (nothing improved the objective)'}")

    _step(total, total, "evaluating the test predictions (Dice, clDice, Betti-0 error) against labelsTs")
    results = {}
    for name in (*settings.trainers, f"{flagship}+pp"):
        _, summary = evaluate_folders(str(predictions / name), str(dataset / "labelsTs"), str(dataset / "dataset.json"),
                                      output_folder=str(workdir / "evaluation" / name), metrics=list(METRICS),
                                      n_resamples=1000, progress=False)
        results[name] = {m: summary["mean_over_classes"][m] for m in METRICS}
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    print(format_table(results, settings))
    print(f"\nDone in {time.perf_counter() - started:.0f} s. Everything is in {workdir}:")
    print("  nnUNet_raw/ nnUNet_preprocessed/ nnUNet_results/  nnU-Net's own folders")
    print("  predictions/<trainer>/  evaluation/<trainer>/metrics_per_case.csv  logs/  results.json")
    return results


def format_table(results: dict, settings: DemoSettings) -> str:
    lines = [f"\nTest set ({settings.n_test} volumes), {settings.epochs} epochs × {settings.iterations} iterations, "
             f"mean [95% bootstrap CI]; Betti-0 error = |components predicted − components in the reference| "
             f"per case (lower is better):",
             f"{'':<39}" + "".join(f"{METRICS[m]:>24}" for m in METRICS)]
    for trainer, metrics in results.items():
        cells = [f"{metrics[m]['mean']:.3f} [{metrics[m]['ci_low']:.3f}, {metrics[m]['ci_high']:.3f}]" for m in METRICS]
        lines.append(f"{trainer:<39}" + "".join(f"{c:>24}" for c in cells))
    return "\n".join(lines)
