"""Which dropped paths can be a model, a dataset or a job: decided while the file is dragged.

Torch-free and cheap (a suffix and the first few KB of the file), so a drag over the window
is refused at once, with the reason, instead of being accepted and failing later.
"""

from __future__ import annotations

from pathlib import Path

SNIFF_BYTES = 4096
ALWAYS_OK = (".gguf", ".toml")  # a GGUF model is binary; a job file is text


def refusal(path: str) -> str:
    """'' when ``path`` may be a model, a dataset or a job file; else why it cannot be one."""
    p = Path(path)
    if p.is_dir():
        return ""
    if not p.is_file():
        return f"{p.name or path} is not a file or folder on this computer."
    if p.suffix.lower() in ALWAYS_OK:
        return ""
    try:
        with p.open("rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except OSError as exc:
        return f"{p.name} cannot be read ({exc.strerror or exc})."
    if b"\0" in head:
        return (f"{p.name} is a binary file (an image, archive or program?), not a model (.gguf or a model folder) "
                "or a dataset (.jsonl, .json, .txt, .md or source code).")
    return ""


def refusals(paths: list[str]) -> list[str]:
    """The reasons for each path that cannot be used (empty when all can)."""
    return [reason for reason in map(refusal, paths) if reason]
