"""``python -m senior_intern``: a sub-command (``train ...``, ``dataset ...``) runs the command
line; anything else (nothing, paths to open, ``--version``) opens the desktop app."""

import sys

from senior_intern.cli import command_names


def main(argv: list[str]) -> int:
    """Dispatch ``argv`` (without the program name) to the CLI or the app; returns the exit code."""
    if argv and argv[0] in command_names():
        from senior_intern.cli import main as cli_main

        return cli_main(argv)
    from senior_intern.gui.app import main as app_main

    return app_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
