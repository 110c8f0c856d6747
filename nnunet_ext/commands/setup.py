"""`trainer-path`, `trainers` and `doctor`: connecting nnunet-ext to a stock nnU-Net."""
from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "trainer-path",
        help="print the folder for nnUNet_extTrainer",
        description="Print the folder that nnU-Net must search for our trainers. Use it as\n"
                    "  export nnUNet_extTrainer=$(nnunet-ext trainer-path)",
    )
    p.set_defaults(func=_trainer_path)

    p = subparsers.add_parser("trainers", help="list the trainers this package ships",
                              description="List the trainer names to pass to nnUNetv2_train/nnUNetv2_predict -tr.")
    p.set_defaults(func=_trainers)

    p = subparsers.add_parser(
        "doctor",
        help="check nnU-Net's environment variables and that nnU-Net finds every trainer",
        description="Check nnUNet_raw, nnUNet_preprocessed, nnUNet_results and nnUNet_extTrainer, and that "
                    "nnU-Net's own trainer lookup finds every trainer of nnunet-ext. Exits 1 if anything is wrong.",
    )
    p.set_defaults(func=_doctor)


def _trainer_path(args) -> int:
    from nnunet_ext.discovery import trainer_folder

    print(trainer_folder())
    return 0


def _trainers(args) -> int:
    from nnunet_ext.trainers import SHIPPED_TRAINERS

    for name, cls in SHIPPED_TRAINERS.items():
        summary = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"{name:<24} {summary}")
    print("\nEvery trainer (and the stock nnUNetTrainer) also exists as <Trainer>_<E>epochs and "
          "<Trainer>_<E>epochs_<I>iters, e.g. TopoTrainer_5epochs or TopoTrainer_2epochs_10iters.")
    return 0


def _doctor(args) -> int:
    from nnunet_ext.discovery import run_checks

    checks = run_checks()
    for check in checks:
        print(f"[{'ok' if check.ok else 'FAIL'}] {check.message}")
    failed = [c for c in checks if not c.ok]
    print(f"\n{len(checks) - len(failed)} of {len(checks)} checks passed." if failed else "\nAll checks passed.")
    return 1 if failed else 0
