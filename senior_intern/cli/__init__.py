"""``senior-intern``: the command line. Does headless what the app does.

Each sub-command lives in its own module with a ``register(subparsers)`` function; errors a
user can cause (``ValueError``, ``FileNotFoundError``) print one readable line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from senior_intern import __version__

# Modules that add sub-commands, in the order they show in --help.
COMMAND_MODULES = (
    "senior_intern.cli.train_cmd",
    "senior_intern.cli.model_cmd",
    "senior_intern.cli.dataset_cmd",
    "senior_intern.cli.adapters_cmd",
    "senior_intern.cli.hardware_cmd",
    "senior_intern.cli.estimate_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="senior-intern",
        description="Train LoRA adapters on your own code and data, locally.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that command is not built yet
                continue
            raise
        module.register(sub)
    return parser


def command_names() -> set[str]:
    """The names of the sub-commands ``build_parser`` registers (``train``, ``dataset``, ...)."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``senior-intern`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
