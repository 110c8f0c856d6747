"""`nnunet-ext <command>`: thin argument parsing over the package's modules.

Each command lives in a module that exposes ``register(subparsers)``; it adds its own sub-parser
and sets ``func`` (called with the parsed namespace, returns an exit code). Heavy imports happen
inside the command functions so that ``nnunet-ext --help`` stays instant.

A user mistake never ends in a Python traceback: whatever a command lets through is printed as
``error: <what>`` (exit code 1; Ctrl-C: 130). ``nnunet-ext --debug COMMAND`` or the environment
variable ``NNUNET_EXT_DEBUG=1`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

DEBUG_VARIABLE = "NNUNET_EXT_DEBUG"

# modules that add sub-commands; each defines ``register(subparsers) -> None``
COMMAND_MODULES = (
    "nnunet_ext.commands.setup",
    "nnunet_ext.commands.demo",
    "nnunet_ext.commands.evaluate",
    "nnunet_ext.commands.convert",
    "nnunet_ext.commands.postprocess",
    "nnunet_ext.commands.recipes",
    "nnunet_ext.commands.predict",
    "nnunet_ext.commands.study",
    "nnunet_ext.commands.validate",
    "nnunet_ext.commands.train",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet-ext",
        description="Topology-aware trainers, dataset converters and evaluation for stock nnU-Net v2.",
    )
    parser.add_argument("--debug", action="store_true",
                        help=f"show the Python traceback of an error (or set {DEBUG_VARIABLE}=1)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def error_message(e: BaseException) -> str:
    """What an exception says to a user: its message (one line unless it lists several problems,
    as a :class:`~nnunet_ext.dataset_conversion.ConversionError` of many cases does)."""
    from nnunet_ext.dataset_conversion.errors import ConversionError

    if isinstance(e, ConversionError):
        return str(e)
    if isinstance(e, OSError) and e.strerror:
        where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
        return f"{where}: {e.strerror}" if where else e.strerror
    text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    if not isinstance(e, (OSError, ValueError, KeyError, RuntimeError)) or not first:
        first = f"{type(e).__name__}: {first}" if first else type(e).__name__
    return first[:2000]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    debug = args.debug or os.environ.get(DEBUG_VARIABLE, "").strip() not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        hint = "" if _is_user_error(e) else f" (nnunet-ext --debug or {DEBUG_VARIABLE}=1 shows the traceback)"
        print(f"error: {error_message(e)}{hint}", file=sys.stderr)
        return 1


def _is_user_error(e: BaseException) -> bool:
    from nnunet_ext.dataset_conversion.errors import ConversionError

    return isinstance(e, (ConversionError, OSError, ValueError, KeyError))


if __name__ == "__main__":
    sys.exit(main())
