"""Benchmark: what `nnunet-ext study run` adds per job, locally and through SLURM, over the same
`nnUNetv2_train` commands run by hand — in one run, on the same tiny dataset.

Three ways to train the same N folds (one trainer, a budget of E epochs × I iterations, in results folders
of their own so that nothing is reused):

* **by hand**: ``nnUNetv2_train D 3d_fullres F -tr T -device cpu`` one after the other;
* **local**: a study of those N trainings (no post-processing, no test set, no best-configuration step)
  through ``study run --executor local --cpus C`` — one job at a time;
* **slurm**: the same study through ``study run --executor slurm --wait`` on a one-node SLURM cluster
  started for the benchmark (``tests/_slurm_cluster.py``: Debian's slurm-wlm and munge, installed when
  missing; needs root). Each job asks for all C CPUs, so the jobs run one at a time as by hand.

Every training gets the same ``nnUNet_n_proc_DA`` (C − 1). The study's time is taken from its start until
the last training ended (its job records), so the report job that follows is not counted; the overhead per
job is (study time − hand time) / N. Repeats alternate the three ways; medians are printed.

    python benchmarks/bench_study_overhead.py                  # 3 folds × (1 epoch × 3 iterations), 2 repeats
    python benchmarks/bench_study_overhead.py --folds 5 --repeats 3 --no-slurm
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CLUSTER_PATH = Path(__file__).resolve().parent.parent / "tests" / "_slurm_cluster.py"
DATASET_ID = 871


def _load_cluster_module():
    spec = importlib.util.spec_from_file_location("_slurm_cluster", _CLUSTER_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _environment(root: Path, cpus: int) -> dict:
    from nnunet_ext.discovery import trainer_folder

    env = dict(os.environ)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (root / name).mkdir(parents=True, exist_ok=True)
        env[name] = str(root / name)
    env.update(nnUNet_extTrainer=str(trainer_folder()), nnUNet_n_proc_DA=str(max(0, cpus - 1)),
               nnUNet_def_n_proc="1", nnUNet_compile="false", PYTHONWARNINGS="ignore")
    return env


def prepare_dataset(env: dict, n_train: int) -> str:
    """A tiny synthetic tube dataset (16 × 40 × 40), planned and preprocessed by the stock command."""
    from nnunet_ext.nnunet_commands import run_nnunet
    from nnunet_ext.synthetic import write_synthetic_dataset

    dataset = write_synthetic_dataset(env["nnUNet_raw"], DATASET_ID, "labels", n_train=n_train, n_test=0,
                                      shape=(16, 40, 40), seed=DATASET_ID)
    log = Path(env["nnUNet_results"]) / "plan.log"
    run_nnunet(["nnUNetv2_plan_and_preprocess", "-d", DATASET_ID, "-c", "3d_fullres", "-np", 1, "-npfp", 1],
               log, {**env, "nnUNet_n_proc_DA": str(max(1, int(env["nnUNet_n_proc_DA"])))}, echo=None)
    return dataset.name


def by_hand(env: dict, trainer: str, folds: list[int], results: Path) -> float:
    from nnunet_ext.nnunet_commands import nnunet_executable

    env = {**env, "nnUNet_results": str(results)}
    started = time.perf_counter()
    for fold in folds:
        subprocess.run([nnunet_executable("nnUNetv2_train"), str(DATASET_ID), "3d_fullres", str(fold), "-tr",
                        trainer, "-device", "cpu"], env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def _study_file(folder: Path, trainer: str, folds: list[int], cpus: int) -> Path:
    path = folder / "overhead.json"
    path.write_text(json.dumps({
        "dataset": DATASET_ID, "trainers": [trainer], "folds": folds, "device": "cpu",
        "postprocessing": None, "find_best_configuration": False,
        "report": {"metrics": ["dice"], "bootstrap": 100},
        "resources": {"default": {"cpus": cpus, "memory_gb": 6, "time": 60}},
        "slurm": {"stagger_minutes": 0},
    }))
    return path


def through_study(env: dict, study: Path, workdir: Path, results: Path, executor: str, cpus: int) -> float:
    """Seconds from `study run` to the end of its last training (from the job records)."""
    env = {**env, "nnUNet_results": str(results)}
    command = [sys.executable, "-m", "nnunet_ext.cli", "study", "run", str(study), "--workdir", str(workdir),
               "--executor", executor]
    command += ["--cpus", str(cpus)] if executor == "local" else ["--wait"]
    started = time.time()
    run = subprocess.run(command, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"study run --executor {executor} failed:\n{(run.stdout + run.stderr)[-3000:]}")
    ends = [json.loads(p.read_text()).get("ended") for p in (workdir / "jobs").glob("train__*.json")]
    if not ends or None in ends:
        raise RuntimeError(f"{executor}: a training has no end time in {workdir / 'jobs'}")
    return max(ends) - started


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folds", type=int, default=3, help="trainings per way (folds 0..N-1; default 3)")
    p.add_argument("--budget", default="1epoch_3iters", help="trainer suffix: nnUNetTrainer_<budget> (default "
                   "1epoch_3iters)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs per job (default: all)")
    p.add_argument("--no-slurm", action="store_true", help="leave out the SLURM executor")
    p.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder, removed afterwards")
    args = p.parse_args(argv)

    root = args.workdir or Path(tempfile.mkdtemp(prefix="nnunet_ext_bench_study_"))
    env = _environment(root, args.cpus)
    folds = list(range(args.folds))
    trainer = f"nnUNetTrainer_{args.budget}"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; load "
          f"{os.getloadavg()[0]:.1f}; {args.folds} trainings of {trainer}, {args.repeats} repeat(s)", flush=True)
    prepare_dataset(env, n_train=max(5, args.folds))
    cluster = None
    ways = ["hand", "local"]
    if not args.no_slurm:
        module = _load_cluster_module()
        try:
            cluster = module.start_cluster(root / "slurm", cpus=args.cpus)
            env["SLURM_CONF"] = cluster.env["SLURM_CONF"]
            ways.append("slurm")
        except module.ClusterUnavailable as error:
            print(f"SLURM left out: {error}")
    study = _study_file(root, trainer, folds, args.cpus)
    times: dict[str, list[float]] = {w: [] for w in ways}
    try:
        for repeat in range(args.repeats):
            for way in ways:
                results = root / f"results_{way}_{repeat}"
                results.mkdir()
                if way == "hand":
                    seconds = by_hand(env, trainer, folds, results)
                else:
                    seconds = through_study(env, study, root / f"work_{way}_{repeat}", results, way, args.cpus)
                times[way].append(seconds)
                print(f"repeat {repeat}: {way:<5} {seconds:7.1f} s", flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    hand = statistics.median(times["hand"])
    print(f"\nload after: {os.getloadavg()[0]:.1f}")
    print("| way | median time for the trainings | vs by hand | overhead per job |")
    print("|---|---|---|---|")
    for way in ways:
        t = statistics.median(times[way])
        per_job = (t - hand) / args.folds
        print(f"| {way} | {t:.1f} s | {t / hand:.3f}× | {'—' if way == 'hand' else f'{per_job:+.1f} s'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
