"""``senior-intern adapters``: the adapter library from the command line.

    adapters list | show ID | delete ID | rename ID NAME | describe ID TEXT | import PATH
             | export-gguf ID --base PATH [-o FILE] [--dtype f32|f16|bf16|q8_0] [--ollama]
             | export-merged-gguf ID --base BASE(.gguf|folder) -o FILE [--type same|q8_0|q4_0|f16|bf16] [--ollama]
             | merge ID -o DIR [--base PATH] | try ID PROMPT [--base PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from senior_intern import paths
from senior_intern.adapters.library import AdapterInfo, AdapterLibrary
from senior_intern.hardware.metrics import format_bytes


def _library(args: argparse.Namespace) -> AdapterLibrary:
    return AdapterLibrary(args.library or paths.adapters_dir())


def _fmt(value: float | None) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def printable(text: str) -> str:
    """``text`` with control characters (terminal escape sequences included) shown as escapes, not run."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def _row(i: AdapterInfo) -> str:
    if i.damaged:
        return f"{printable(i.id):<36} DAMAGED: {printable(i.damaged)}"
    return (f"{i.id:<36} {printable(i.name)[:24]:<24} {i.created[:19]:<19} r={i.rank!s:<4} alpha={i.alpha!s:<6} "
            f"loss={_fmt(i.final_loss):<7} best_val={_fmt(i.best_validation_loss):<7} {format_bytes(i.size_bytes)}")


def cmd_list(args: argparse.Namespace) -> int:
    """Print the library, newest first."""
    infos = _library(args).list()
    if not infos:
        print(f"No adapters in {_library(args).root}")
    for info in infos:
        print(_row(info))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print one adapter's details."""
    lib = _library(args)
    info = lib.get(args.id)
    print(_row(info))
    for key in ("name", "description", "created", "base_model", "base_model_hash", "target_modules", "path"):
        print(f"  {key}: {printable(getattr(info, key))}")
    meta = lib.metadata(args.id)
    for key in ("lora_config", "training_config"):
        if key in meta:
            print(f"  {key}: {json.dumps(meta[key])}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    """Delete an adapter folder."""
    _library(args).delete(args.id)
    print(f"Deleted {args.id}")
    return 0


def cmd_rename(args: argparse.Namespace) -> int:
    """Rename an adapter."""
    info = _library(args).rename(args.id, args.name)
    print(f"Renamed {info.id} to {info.name!r}")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    """Set an adapter's description."""
    _library(args).set_description(args.id, args.text)
    print(f"Description of {args.id} updated")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Import a PEFT adapter folder."""
    if args.base is not None and not Path(args.base).exists():
        raise FileNotFoundError(f"Base model not found: {args.base}")
    info = _library(args).import_(args.path, name=args.name, base=args.base)
    print(f"Imported as {info.id}")
    return 0


def _base_for(lib: AdapterLibrary, adapter_id: str, given: Path | None) -> str:
    base = str(given) if given else lib.get(adapter_id).base_model
    if not base or not Path(base).exists():
        raise FileNotFoundError(f"Base model not found: {base or '(none recorded)'}; pass --base PATH")
    return base


def cmd_export_gguf(args: argparse.Namespace) -> int:
    """Write the adapter as a GGUF LoRA file for llama.cpp."""
    from senior_intern.adapters.gguf import export_gguf

    lib = _library(args)
    info = lib.get(args.id)
    out = args.output or Path(f"{info.id}.gguf")
    base = _base_for(lib, args.id, args.base)
    if args.ollama and not str(base).lower().endswith(".gguf"):
        raise ValueError(f"--ollama needs the base as a .gguf file (Ollama runs GGUF), got {base}; pass --base BASE.gguf")
    export_gguf(info.path, base, out, dtype=args.dtype, overwrite=args.force)
    print(f"Wrote {out}\nUse it with llama.cpp: llama-cli -m <base>.gguf --lora {out}")
    if args.ollama:
        _ollama(Path(out).parent, base, info.name, adapter=out, overwrite=args.force)
    return 0


def cmd_export_merged_gguf(args: argparse.Namespace) -> int:
    """Merge the adapter into a GGUF base and write a full GGUF for llama.cpp, Ollama and LM Studio."""
    from senior_intern.adapters.gguf_merge import export_merged_gguf

    lib = _library(args)
    info = lib.get(args.id)
    base = _base_for(lib, args.id, args.base)

    def progress(done: int, total: int, name: str) -> None:
        print(f"\r[{done}/{total}] {name:<40}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    result = export_merged_gguf(info.path, base, args.output, qtype=args.type, overwrite=args.force, on_progress=progress)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"Wrote {result.path} ({len(result.merged)} tensors merged, the rest copied from {base})")
    print(f"Use it with llama.cpp: llama-cli -m {result.path}\nLM Studio: lms import {result.path}")
    if args.ollama:
        _ollama(result.path.parent, base, info.name, merged=result.path, overwrite=args.force)
    return 0


def _ollama(folder: Path, base: str, name: str, overwrite: bool, **target: Path) -> None:
    from senior_intern.adapters.modelfile import write_modelfile

    path, fmt = write_modelfile(folder, base, overwrite=overwrite, **target)
    if fmt.template is None:
        print("note: the base's chat template has no known Ollama mapping; the Modelfile has no TEMPLATE", file=sys.stderr)
    tag = "".join(c if c.isalnum() or c in "-_." else "-" for c in name.lower()).strip("-.") or "senior-intern"
    print(f"Wrote {path}\nCreate the Ollama model: cd {folder} && ollama create {tag} -f Modelfile")


def cmd_merge(args: argparse.Namespace) -> int:
    """Merge the adapter into its base and save a Hugging Face folder."""
    from senior_intern.adapters.merge import gguf_convert_hint, merge_adapter

    lib = _library(args)
    out = merge_adapter(lib.get(args.id).path, _base_for(lib, args.id, args.base), args.output)
    print(f"Merged model written to {out}\n{gguf_convert_hint(out)}")
    return 0


def cmd_try(args: argparse.Namespace) -> int:
    """Generate from a prompt with the base model, then with the adapter."""
    from senior_intern.adapters.generate import load_for_playground

    lib = _library(args)
    info = lib.get(args.id)
    play = load_for_playground(_base_for(lib, args.id, args.base), info.path)
    for label, use in (("base", False), ("adapter", True)):
        print(f"--- {label}:")
        play.generate(args.prompt, use, max_new_tokens=args.max_new_tokens, on_token=lambda t: print(t, end="", flush=True))
        print()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``adapters`` and its sub-commands."""
    p = sub.add_parser("adapters", help="manage the adapter library")
    p.add_argument("--library", type=Path, help="library folder (default: the user data folder)")
    s = p.add_subparsers(dest="adapters_command", metavar="ACTION", required=True)
    s.add_parser("list", help="list adapters, newest first").set_defaults(func=cmd_list)
    for name, fn, helptext in (("show", cmd_show, "show one adapter"), ("delete", cmd_delete, "delete an adapter")):
        c = s.add_parser(name, help=helptext)
        c.add_argument("id")
        c.set_defaults(func=fn)
    c = s.add_parser("rename", help="rename an adapter")
    c.add_argument("id")
    c.add_argument("name")
    c.set_defaults(func=cmd_rename)
    c = s.add_parser("describe", help="set the description")
    c.add_argument("id")
    c.add_argument("text")
    c.set_defaults(func=cmd_describe)
    c = s.add_parser("import", help="import a PEFT adapter folder")
    c.add_argument("path", type=Path)
    c.add_argument("--name")
    c.add_argument("--base", type=Path, help="base model (.gguf or HF folder) the adapter must fit; recorded as its base")
    c.set_defaults(func=cmd_import)
    c = s.add_parser("export-gguf", help="export as a GGUF LoRA for llama.cpp")
    c.add_argument("id")
    c.add_argument("--base", type=Path, help="base model (.gguf or HF folder); default: the one it was trained on")
    c.add_argument("-o", "--output", type=Path)
    c.add_argument("--dtype", choices=["f32", "f16", "bf16", "q8_0"], default="f16")
    c.add_argument("--force", action="store_true", help="replace an existing output file (never the base model)")
    c.add_argument("--ollama", action="store_true", help="also write an Ollama Modelfile (FROM base, ADAPTER this file)")
    c.set_defaults(func=cmd_export_gguf)
    c = s.add_parser("export-merged-gguf", help="merge into the base and write a full GGUF (llama.cpp, Ollama, LM Studio)")
    c.add_argument("id")
    c.add_argument("--base", type=Path, help="base model: a .gguf file, or a Hugging Face folder (Llama, Mistral, Qwen2/3) "
                                             "written as GGUF; default: the one it was trained on")
    c.add_argument("-o", "--output", type=Path, required=True)
    c.add_argument("--type", choices=["same", "q8_0", "q4_0", "f16", "bf16"], default="same",
                   help="type of the merged tensors (same: the base's own where it can be written, else q8_0; "
                        "on a 4-bit base prefer q8_0, which keeps a small adapter's change)")
    c.add_argument("--force", action="store_true", help="replace an existing output file (never the base model)")
    c.add_argument("--ollama", action="store_true", help="also write an Ollama Modelfile beside the output")
    c.set_defaults(func=cmd_export_merged_gguf)
    c = s.add_parser("merge", help="merge into the base and save a Hugging Face folder")
    c.add_argument("id")
    c.add_argument("-o", "--output", type=Path, required=True)
    c.add_argument("--base", type=Path)
    c.set_defaults(func=cmd_merge)
    c = s.add_parser("try", help="generate with the base model and with the adapter")
    c.add_argument("id")
    c.add_argument("prompt")
    c.add_argument("--base", type=Path)
    c.add_argument("--max-new-tokens", type=int, default=64)
    c.set_defaults(func=cmd_try)
    p.set_defaults(func=lambda a: (p.print_help(sys.stderr), 2)[1])
