"""Reading the header of a GGUF file: its key/value metadata and tensor table, no weights.

``gguf.GGUFReader`` builds a numpy view for every string of the vocabulary and takes seconds on
a 49k-token model; this reader walks the same layout with ``struct`` over a memory map, keeps the
scalar values and short arrays, and only counts long arrays (vocabulary, merges), so reading the
demo model's header takes a few hundredths of a second. The value and tensor type codes come
from the ``gguf`` package.

Layout (little-endian): ``b"GGUF"``, version u32, tensor count u64, key/value count u64; each
key/value is a string key, a value type u32 and the value; each tensor info is a string name,
dimension count u32, the dimensions u64 (innermost first), the ggml type u32 and the data offset
u64; tensor data starts at the next multiple of ``general.alignment`` (default 32).
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from senior_intern.models.info import ModelLoadError

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
KEEP_ARRAY_MAX = 64
"""Arrays up to this length keep their values; longer ones (vocabularies) are only counted."""

_SCALARS: dict[int, struct.Struct] = {
    GGUFValueType.UINT8: struct.Struct("<B"),
    GGUFValueType.INT8: struct.Struct("<b"),
    GGUFValueType.UINT16: struct.Struct("<H"),
    GGUFValueType.INT16: struct.Struct("<h"),
    GGUFValueType.UINT32: struct.Struct("<I"),
    GGUFValueType.INT32: struct.Struct("<i"),
    GGUFValueType.FLOAT32: struct.Struct("<f"),
    GGUFValueType.BOOL: struct.Struct("<?"),
    GGUFValueType.UINT64: struct.Struct("<Q"),
    GGUFValueType.INT64: struct.Struct("<q"),
    GGUFValueType.FLOAT64: struct.Struct("<d"),
}
_U32 = _SCALARS[GGUFValueType.UINT32]
_U64 = _SCALARS[GGUFValueType.UINT64]


@dataclass(frozen=True)
class GGUFTensor:
    """One entry of the tensor table: ``shape`` is in ggml order (innermost dimension first)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int
    """Start of the data, relative to the header's ``data_offset``."""

    @property
    def n_elements(self) -> int:
        """Number of values in the tensor."""
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes the tensor's (possibly block-quantised) data takes in the file."""
        block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(self.ggml_type)]
        return self.n_elements // block_size * type_size


@dataclass(frozen=True)
class GGUFHeader:
    """The metadata and tensor table of a GGUF file.

    ``fields`` maps each key to its value (str, int, float, bool, or a list for arrays of at most
    ``KEEP_ARRAY_MAX`` items); ``array_lengths`` gives the length of every array, long or short.
    """

    path: Path
    version: int
    fields: dict[str, Any]
    array_lengths: dict[str, int]
    tensors: tuple[GGUFTensor, ...]
    data_offset: int
    file_size: int

    @property
    def architecture(self) -> str:
        """``general.architecture``, e.g. ``"llama"``."""
        return str(self.fields.get("general.architecture", ""))

    def arch_field(self, name: str, default: Any = None) -> Any:
        """The architecture-specific value ``<architecture>.<name>``, e.g. ``arch_field("block_count")``."""
        return self.fields.get(f"{self.architecture}.{name}", default)


class _Truncated(Exception):
    """A read ran past the end of the file."""


class _Cursor:
    """Sequential little-endian reads over a buffer, with bounds checks."""

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0
        self.end = len(buf)

    def _advance(self, n: int) -> int:
        start = self.pos
        if n < 0 or start + n > self.end:
            raise _Truncated
        self.pos = start + n
        return start

    def scalar(self, fmt: struct.Struct) -> Any:
        return fmt.unpack_from(self.buf, self._advance(fmt.size))[0]

    def string(self) -> str:
        n = self.scalar(_U64)
        start = self._advance(n)
        return self.buf[start : start + n].decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == GGUFValueType.STRING:
            return self.string()
        if vtype == GGUFValueType.ARRAY:
            return self.array()[0]
        raise ValueError(f"unknown value type {vtype}")

    def array(self) -> tuple[list[Any] | None, int]:
        """Read an array: (its values, or None when it is longer than KEEP_ARRAY_MAX; its length)."""
        etype = self.scalar(_U32)
        count = self.scalar(_U64)
        if count <= KEEP_ARRAY_MAX:
            return [self.value(etype) for _ in range(count)], count
        if etype in _SCALARS:
            self._advance(count * _SCALARS[etype].size)
        elif etype == GGUFValueType.STRING:
            for _ in range(count):
                self._advance(self.scalar(_U64))
        elif etype == GGUFValueType.ARRAY:
            for _ in range(count):
                self.array()
        else:
            raise ValueError(f"unknown array element type {etype}")
        return None, count


_HEADERS: dict[tuple[str, int, int], GGUFHeader] = {}
_HEADERS_KEPT = 8


def read_gguf_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """Read the header of the GGUF file at ``path`` without reading any weights.

    The last few headers read are kept by path, size and modification time: opening a model reads
    it several times (metadata, the config, the tensor table), and walking a large vocabulary
    takes a few tenths of a second each time. Raises ``ModelLoadError`` when the file is not
    GGUF, has an unsupported version, is corrupt, or is truncated (its tensor table points past
    the end of the file).
    """
    path = Path(path)
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    header = _HEADERS.get(key)
    if header is None:
        header = _read_gguf_header(path, stat.st_size)
        _HEADERS[key] = header
        while len(_HEADERS) > _HEADERS_KEPT:
            _HEADERS.pop(next(iter(_HEADERS)))
    return header


def _read_gguf_header(path: Path, size: int) -> GGUFHeader:
    if size < 24:
        raise ModelLoadError(f"{path}: not a GGUF file (only {size} bytes); copy or download it again")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != MAGIC:
            raise ModelLoadError(f"{path}: not a GGUF file (it does not start with 'GGUF')")
        try:
            return _parse(path, buf, size)
        except _Truncated:
            raise ModelLoadError(
                f"{path}: truncated GGUF file (its header runs past the end of the {size}-byte file); "
                "copy or download it again"
            ) from None
        except ValueError as exc:
            if isinstance(exc, ModelLoadError):
                raise
            raise ModelLoadError(f"{path}: corrupt GGUF file ({exc}); copy or download it again") from None


def _parse(path: Path, buf: mmap.mmap, size: int) -> GGUFHeader:
    cur = _Cursor(buf)
    cur.pos = 4
    version = cur.scalar(_U32)
    if version not in SUPPORTED_VERSIONS:
        raise ModelLoadError(
            f"{path}: GGUF version {version} is not supported (supported: {', '.join(map(str, SUPPORTED_VERSIONS))})"
        )
    n_tensors = cur.scalar(_U64)
    n_fields = cur.scalar(_U64)
    fields: dict[str, Any] = {}
    array_lengths: dict[str, int] = {}
    for _ in range(n_fields):
        key = cur.string()
        vtype = cur.scalar(_U32)
        if vtype == GGUFValueType.ARRAY:
            values, count = cur.array()
            array_lengths[key] = count
            if values is not None:
                fields[key] = values
        else:
            fields[key] = cur.value(vtype)
    tensors = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.scalar(_U32)
        shape = tuple(cur.scalar(_U64) for _ in range(n_dims))
        ggml_type = cur.scalar(_U32)
        offset = cur.scalar(_U64)
        if ggml_type not in GGMLQuantizationType._value2member_map_:
            raise ValueError(f"tensor {name} has unknown type {ggml_type}")
        tensors.append(GGUFTensor(name, shape, ggml_type, offset))
    alignment = int(fields.get("general.alignment", DEFAULT_ALIGNMENT)) or DEFAULT_ALIGNMENT
    data_offset = -(-cur.pos // alignment) * alignment
    needed = max((data_offset + t.offset + t.nbytes for t in tensors), default=data_offset)
    if needed > size:
        raise ModelLoadError(
            f"{path}: truncated GGUF file (its tensors need {needed} bytes, the file has {size}); "
            "copy or download it again"
        )
    return GGUFHeader(path, version, fields, array_lengths, tuple(tensors), data_offset, size)
