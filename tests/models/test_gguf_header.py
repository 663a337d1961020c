"""The GGUF header reader: every value type, long arrays counted, and corrupt files refused."""

from __future__ import annotations

import struct

import gguf
import numpy as np
import pytest

from senior_intern.models import ModelLoadError, metadata
from senior_intern.models.gguf_header import KEEP_ARRAY_MAX, read_gguf_header
from senior_intern.models.inspection import gguf_file_type


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _raw_gguf(kv: bytes, n_kv: int, tensors: bytes = b"", n_tensors: int = 0) -> bytes:
    """A GGUF v3 file from already-encoded key/values and tensor infos (no tensor data)."""
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + kv + tensors


def test_reads_every_value_type_and_counts_long_arrays(tmp_path):
    path = tmp_path / "values.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_uint8("t.u8", 200)
    writer.add_int8("t.i8", -5)
    writer.add_uint16("t.u16", 60000)
    writer.add_int16("t.i16", -30000)
    writer.add_uint32("t.u32", 4_000_000_000)
    writer.add_int32("t.i32", -2_000_000_000)
    writer.add_float32("t.f32", 0.5)
    writer.add_uint64("t.u64", 2**40)
    writer.add_int64("t.i64", -(2**40))
    writer.add_float64("t.f64", 0.125)
    writer.add_bool("t.bool", True)
    writer.add_string("t.str", "héllo")
    writer.add_array("t.short", [1, 2, 3])
    writer.add_array("t.nested", [[1, 2], [3]])
    writer.add_array("t.long_ints", list(range(KEEP_ARRAY_MAX + 1)))
    writer.add_array("t.long_strings", [f"tok{i}" for i in range(1000)])
    writer.add_array("t.long_nested", [[i] for i in range(KEEP_ARRAY_MAX + 1)])
    writer.add_tensor("w", np.ones((4, 8), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    header = read_gguf_header(path)
    f = header.fields
    assert (f["t.u8"], f["t.i8"], f["t.u16"], f["t.i16"]) == (200, -5, 60000, -30000)
    assert (f["t.u32"], f["t.i32"], f["t.u64"], f["t.i64"]) == (4_000_000_000, -2_000_000_000, 2**40, -(2**40))
    assert (f["t.f32"], f["t.f64"], f["t.bool"], f["t.str"]) == (0.5, 0.125, True, "héllo")
    assert f["t.short"] == [1, 2, 3] and f["t.nested"] == [[1, 2], [3]]
    for key in ("t.long_ints", "t.long_strings", "t.long_nested"):
        assert key not in f
    assert header.array_lengths["t.long_strings"] == 1000
    assert header.array_lengths["t.long_ints"] == header.array_lengths["t.long_nested"] == KEEP_ARRAY_MAX + 1
    assert header.architecture == "llama"
    (tensor,) = header.tensors
    assert (tensor.name, tensor.shape, tensor.n_elements, tensor.nbytes) == ("w", (8, 4), 32, 64)
    assert header.data_offset % 32 == 0
    assert header.data_offset + tensor.offset + tensor.nbytes <= header.file_size
    assert gguf_file_type(header) == "F16"  # no general.file_type: the type of most weights


def test_unknown_value_type_is_a_corrupt_file(tmp_path):
    path = tmp_path / "bad-value.gguf"
    path.write_bytes(_raw_gguf(_string("x") + struct.pack("<I", 99) + b"\0" * 16, n_kv=1))
    with pytest.raises(ModelLoadError, match=r"bad-value\.gguf: corrupt GGUF file \(unknown value type 99\)"):
        read_gguf_header(path)


def test_unknown_long_array_element_type_is_a_corrupt_file(tmp_path):
    path = tmp_path / "bad-array.gguf"
    kv = _string("x") + struct.pack("<IIQ", gguf.GGUFValueType.ARRAY, 77, KEEP_ARRAY_MAX + 1)
    path.write_bytes(_raw_gguf(kv, n_kv=1))
    with pytest.raises(ModelLoadError, match="unknown array element type 77"):
        read_gguf_header(path)


def test_unknown_tensor_type_is_a_corrupt_file(tmp_path):
    path = tmp_path / "bad-tensor.gguf"
    tensor = _string("w") + struct.pack("<IQIQ", 1, 16, 999, 0)
    path.write_bytes(_raw_gguf(b"", n_kv=0, tensors=tensor, n_tensors=1) + b"\0" * 128)
    with pytest.raises(ModelLoadError, match="tensor w has unknown type 999"):
        read_gguf_header(path)


def test_gguf_without_architecture_or_required_keys(tmp_path):
    path = tmp_path / "no-arch.gguf"
    path.write_bytes(_raw_gguf(b"", n_kv=0) + b"\0" * 32)
    with pytest.raises(ModelLoadError, match="has no general.architecture"):
        metadata(path)
    path = tmp_path / "no-keys.gguf"
    arch = _string("general.architecture") + struct.pack("<I", gguf.GGUFValueType.STRING) + _string("llama")
    path.write_bytes(_raw_gguf(arch, n_kv=1) + b"\0" * 32)
    with pytest.raises(ModelLoadError, match="lacks llama.block_count, llama.embedding_length"):
        metadata(path)


def test_a_rewritten_file_is_read_again(tmp_path) -> None:
    from senior_intern.models.gguf_header import read_gguf_header
    from tests.models.conftest import write_tiny_gguf

    path = write_tiny_gguf(tmp_path / "m.gguf")
    first = read_gguf_header(path)
    assert read_gguf_header(path) is first  # kept: nothing changed
    write_tiny_gguf(path, drop=("output_norm.weight",))
    again = read_gguf_header(path)
    assert len(again.tensors) == len(first.tensors) - 1
