"""transformers' own GGUF config and tokenizer reading, fed by one fast pass over the file's metadata.

``AutoConfig`` / ``AutoTokenizer`` with ``gguf_file=`` read the metadata through
``gguf.GGUFReader``, which builds a numpy memmap view for every part of every value: on the
49k-token demo model that is some 3 million numpy calls, over 4 s per read, and transformers
reads the file twice (once for the config, once more inside ``AutoTokenizer``). Inside
``fast_gguf_metadata(path)``:

- ``gguf.GGUFReader(path)`` (for that file, on this thread) returns a ``MetadataReader``: the same
  ``fields`` (``parts`` / ``data`` / ``types``) and tensor names, parsed with ``struct`` in one
  pass, values as plain Python objects that transformers' ``_gguf_parse_value`` reads as it reads
  numpy arrays; it holds no tensor data.
- ``load_gguf_checkpoint(path, return_tensors=False)`` runs once and later calls get a copy of
  its answer (a copy of its config).

Everything transformers derives from the metadata (architecture renames, config defaults,
tokenizer conversion) is its own code, unchanged, so the config and tokenizer are the ones it
builds without us (``tests/models/test_gguf_fields.py`` checks both). Other files, other
threads, and reads with tensors go to the real functions.
"""

from __future__ import annotations

import contextlib
import copy
import mmap
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from senior_intern.models.info import ModelLoadError

_STRING, _ARRAY = 8, 9
_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")
_lock = threading.Lock()


@dataclass
class MetadataField:
    """One key/value as ``gguf.ReaderField`` shapes it: ``parts[i]`` for ``i`` in ``data`` are the
    values (a 1-tuple for a number, ``bytes`` for a string); ``types`` the value type, then the
    element type for an array."""

    name: str
    parts: list[Any]
    data: list[int]
    types: list[int]


@dataclass(frozen=True)
class MetadataTensor:
    """A tensor table entry without its data (``shape`` innermost dimension first, as ggml lists it)."""

    name: str
    shape: tuple[int, ...]
    tensor_type: int


class MetadataReader:
    """The ``fields`` and ``tensors`` of a GGUF file, read once with ``struct``; no tensor data."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            try:
                self.fields, self.tensors = _parse(buf)
            except (struct.error, IndexError, KeyError, UnicodeDecodeError) as exc:
                raise ModelLoadError(f"{self.path}: corrupt GGUF metadata ({exc}); copy or download the file again") from None


def _parse(buf: mmap.mmap) -> tuple[dict[str, MetadataField], list[MetadataTensor]]:
    if buf[:4] != b"GGUF":
        raise KeyError("the file does not start with 'GGUF'")
    (version,) = _U32.unpack_from(buf, 4)
    n_tensors, n_fields = struct.unpack_from("<QQ", buf, 8)
    pos = 24
    # gguf.GGUFReader lists the header's own numbers first, as fields (u32, u64, u64)
    fields: dict[str, MetadataField] = {
        name: MetadataField(name, [(value,)], [0], [vtype])
        for name, value, vtype in (("GGUF.version", version, 4), ("GGUF.tensor_count", n_tensors, 10),
                                   ("GGUF.kv_count", n_fields, 10))
    }

    def string(at: int) -> tuple[bytes, int]:
        (n,) = _U64.unpack_from(buf, at)
        end = at + 8 + n
        if end > len(buf):
            raise IndexError("a string runs past the end of the file")
        return buf[at + 8:end], end

    for _ in range(n_fields):
        key, pos = string(pos)
        name = key.decode("utf-8")
        (vtype,) = _U32.unpack_from(buf, pos)
        pos += 4
        if vtype == _STRING:
            value, pos = string(pos)
            fields[name] = MetadataField(name, [value], [0], [vtype])
        elif vtype == _ARRAY:
            etype, count = struct.unpack_from("<IQ", buf, pos)
            pos += 12
            if etype == _STRING:
                parts = []
                for _ in range(count):
                    value, pos = string(pos)
                    parts.append(value)
            elif etype in _FORMATS:
                fmt = struct.Struct(f"<{count}{_FORMATS[etype]}")
                parts = [(v,) for v in fmt.unpack_from(buf, pos)]
                pos += fmt.size
            else:
                raise KeyError(f"{name}: arrays of type {etype} are not read")
            fields[name] = MetadataField(name, parts, list(range(count)), [vtype, etype])
        else:
            fmt = struct.Struct("<" + _FORMATS[vtype])
            fields[name] = MetadataField(name, [fmt.unpack_from(buf, pos)], [0], [vtype])
            pos += fmt.size
    tensors = []
    for _ in range(n_tensors):
        raw, pos = string(pos)
        (n_dims,) = _U32.unpack_from(buf, pos)
        shape = struct.unpack_from(f"<{n_dims}Q", buf, pos + 4)
        pos += 4 + 8 * n_dims
        (ggml_type,) = _U32.unpack_from(buf, pos)
        pos += 12  # the type and the data offset
        tensors.append(MetadataTensor(raw.decode("utf-8"), tuple(shape), ggml_type))
    return fields, tensors


@contextlib.contextmanager
def fast_gguf_metadata(path: str | Path) -> Iterator[MetadataReader]:
    """Within the block, transformers' GGUF metadata reads of ``path`` on this thread use one
    ``MetadataReader`` and one ``load_gguf_checkpoint`` answer (see the module docstring).
    One block at a time in the process; others wait."""
    import gguf
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    path = Path(path).resolve()
    reader = MetadataReader(path)
    owner = threading.get_ident()
    real_reader, real_load = gguf.GGUFReader, gguf_utils.load_gguf_checkpoint
    answers: dict[str, Any] = {}

    def ours(p: Any) -> bool:
        return threading.get_ident() == owner and Path(p).resolve() == path

    class SwitchingReader(real_reader):  # type: ignore[misc,valid-type]
        def __new__(cls, p, *args, **kwargs):
            return reader if ours(p) and not args and not kwargs else real_reader(p, *args, **kwargs)

    def load_once(p, return_tensors=False, *args, **kwargs):
        if return_tensors or args or kwargs or not ours(p):
            return real_load(p, return_tensors, *args, **kwargs)
        if "answer" not in answers:
            answers["answer"] = real_load(p, False)
        answer = answers["answer"]  # the callers read only "config" (and may change it)
        return {key: copy.deepcopy(value) if key == "config" else value for key, value in answer.items()}

    with _lock:
        gguf.GGUFReader, gguf_utils.load_gguf_checkpoint = SwitchingReader, load_once
        try:
            yield reader
        finally:
            gguf.GGUFReader, gguf_utils.load_gguf_checkpoint = real_reader, real_load
