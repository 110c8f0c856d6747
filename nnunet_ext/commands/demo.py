"""`nnunet-ext demo`: stock nnU-Net vs TopoTrainer on a built-in synthetic vessel dataset."""
from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="train stock nnU-Net and TopoTrainer on synthetic vessels and compare them",
        description="Generate a small MiniVess-like synthetic dataset, run nnUNetv2_plan_and_preprocess, train the "
                    "stock nnUNetTrainer and TopoTrainer for the same budget, predict the test volumes with "
                    "mirroring TTA and print Dice and clDice for both. All folders stay in --workdir. The default "
                    "budget finishes in about ten minutes on a 2-core CPU; use --device cuda with a larger "
                    "--budget for a meaningful comparison.",
    )
    p.add_argument("--workdir", type=Path, default=Path("nnunet_ext_demo"),
                   help="working folder (default: ./nnunet_ext_demo)")
    p.add_argument("--device", choices=["cpu", "cuda", "mps"], default="cpu", help="nnU-Net's -device (default cpu)")
    p.add_argument("--budget", type=int, default=None, metavar="EPOCHS",
                   help="training epochs per trainer (default 2 on cpu, 50 on cuda)")
    p.add_argument("--iterations", type=int, default=None,
                   help="training iterations per epoch (default 12 on cpu, 250 on cuda)")
    p.add_argument("--cases", type=int, default=8, help="training volumes (default 8)")
    p.add_argument("--test-cases", type=int, default=3, help="test volumes (default 3)")
    p.add_argument("--shape", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                   help="volume shape (default 20 48 48 on cpu, 64 128 128 on cuda)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo run in --workdir")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from nnunet_ext.demo import DemoSettings, run_demo
    from nnunet_ext.nnunet_commands import NnUNetCommandError

    on_gpu = args.device != "cpu"
    settings = DemoSettings(
        workdir=args.workdir,
        device=args.device,
        epochs=args.budget if args.budget is not None else (50 if on_gpu else 2),
        iterations=args.iterations if args.iterations is not None else (250 if on_gpu else 12),
        n_train=args.cases,
        n_test=args.test_cases,
        shape=tuple(args.shape) if args.shape else ((64, 128, 128) if on_gpu else (20, 48, 48)),
        seed=args.seed,
        overwrite=args.overwrite,
    )
    for name, value in (("--budget", settings.epochs), ("--iterations", settings.iterations),
                        ("--cases", settings.n_train), ("--test-cases", settings.n_test)):
        if value < 1:
            print(f"nnunet-ext demo: {name} must be at least 1, got {value}")
            return 2
    if settings.n_train < 5:
        print("nnunet-ext demo: --cases must be at least 5 (nnU-Net's 5-fold split needs 5 training cases)")
        return 2
    try:
        run_demo(settings)
    except (FileExistsError, NnUNetCommandError) as error:
        print(f"nnunet-ext demo: {error}")
        return 1
    return 0
