"""`nnunet-ext <command>`: thin argument parsing over the package's modules.

Each command lives in a module that exposes ``register(subparsers)``; it adds its own sub-parser
and sets ``func`` (called with the parsed namespace, returns an exit code). Heavy imports happen
inside the command functions so that ``nnunet-ext --help`` stays instant.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# modules that add sub-commands; each defines ``register(subparsers) -> None``
COMMAND_MODULES = (
    "nnunet_ext.commands.setup",
    "nnunet_ext.commands.demo",
    "nnunet_ext.commands.evaluate",
    "nnunet_ext.commands.convert",
    "nnunet_ext.commands.postprocess",
    "nnunet_ext.commands.recipes",
    "nnunet_ext.commands.predict",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet-ext",
        description="Topology-aware trainers, dataset converters and evaluation for stock nnU-Net v2.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
