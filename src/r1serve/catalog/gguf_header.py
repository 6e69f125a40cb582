"""The header of a GGUF file: metadata and tensor shapes, without the vocabulary's strings.

gguf's ``GGUFReader`` builds a numpy view for every string of every array, which takes about
nine seconds for a 152k-token vocabulary; sizing a model needs only scalars, array lengths and
tensor shapes. This scanner walks the same layout (GGUF v2/v3, little-endian) with gguf's own
type tables, keeps arrays of up to ``SMALL_ARRAY`` numbers, and bounds every count by the file
size so a crafted file cannot make it allocate or loop without limit. Arrays named in ``keep``
(a tokenizer's vocabulary, token types and merges) are read in full, as lists, their strings
decoded strictly.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path

from gguf import GGML_QUANT_SIZES, GGUF_MAGIC, GGMLQuantizationType, GGUFValueType, LlamaFileType

from r1serve.errors import UnsupportedModelError

SMALL_ARRAY = 4096
MAX_TENSORS = 1_000_000
MAX_DIMS = 8

_SCALARS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}

MetadataValue = (
    int
    | float
    | bool
    | str
    | tuple[int | float | bool, ...]
    | list[str]
    | list[int | float | bool]
    | None
)


@dataclass(frozen=True, slots=True)
class GgufTensor:
    """A tensor's name, shape and storage type."""

    name: str
    shape: tuple[int, ...]
    quant_type: GGMLQuantizationType

    @property
    def n_elements(self) -> int:
        """Number of weights."""
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @property
    def n_bytes(self) -> int:
        """Bytes the tensor occupies in the file."""
        block_size, type_size = GGML_QUANT_SIZES[self.quant_type]
        return self.n_elements // block_size * type_size


@dataclass(frozen=True, slots=True)
class GgufHeader:
    """Metadata (long arrays appear as their length only) and tensor list of a GGUF file."""

    version: int
    metadata: dict[str, MetadataValue]
    array_lengths: dict[str, int]
    tensors: tuple[GgufTensor, ...]

    @property
    def architecture(self) -> str:
        """``general.architecture``, e.g. ``qwen2``."""
        value = self.metadata.get("general.architecture")
        if not isinstance(value, str):
            raise UnsupportedModelError("GGUF file has no general.architecture")
        return value

    @property
    def file_type_label(self) -> str:
        """The dominant weight type, e.g. ``Q4_K_M`` or ``F16``."""
        value = self.metadata.get("general.file_type")
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return LlamaFileType(value).name.removeprefix("MOSTLY_").removeprefix("ALL_")
            except ValueError:
                pass
        types = {t.quant_type for t in self.tensors if len(t.shape) > 1}
        return "/".join(sorted(t.name for t in types)) or "unknown"


class _Cursor:
    def __init__(self, data: mmap.mmap | bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, fmt: str) -> int | float | bool:
        """One value of struct format ``fmt``."""
        size = struct.calcsize(fmt)
        if self.offset + size > len(self.data):
            raise UnsupportedModelError("GGUF header ends early: the file is truncated")
        (value,) = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += size
        return value

    def count(self, limit: int, what: str) -> int:
        """A u64 count, refused above ``limit``."""
        value = int(self.take("<Q"))
        if value > limit:
            raise UnsupportedModelError(
                f"GGUF header declares {value} {what}: the file is truncated or corrupt"
            )
        return value

    def string(self, *, strict: bool = False) -> str:
        """A length-prefixed UTF-8 string (``strict``: invalid UTF-8 is an error)."""
        length = self.count(len(self.data) - self.offset, "bytes in a string")
        raw = self.data[self.offset : self.offset + length]
        self.offset += length
        try:
            return bytes(raw).decode("utf-8", errors="strict" if strict else "replace")
        except UnicodeDecodeError as exc:
            raise UnsupportedModelError(
                f"GGUF header holds a string that is not UTF-8: {exc}"
            ) from None

    def skip_string(self) -> None:
        """Step over a length-prefixed string."""
        length = self.count(len(self.data) - self.offset, "bytes in a string")
        self.offset += length


def _value_type(cursor: _Cursor) -> GGUFValueType:
    raw = int(cursor.take("<I"))
    try:
        return GGUFValueType(raw)
    except ValueError:
        raise UnsupportedModelError(f"GGUF header has unknown value type {raw}") from None


def _read_array(
    cursor: _Cursor, key: str, lengths: dict[str, int], keep: Container[str]
) -> MetadataValue:
    item_type = _value_type(cursor)
    if item_type == GGUFValueType.ARRAY:
        raise UnsupportedModelError(f"GGUF key {key} nests arrays; not supported")
    length = cursor.count(len(cursor.data) - cursor.offset, "array items")
    lengths[key] = length
    if key in keep:  # every item is at least one byte, so the count is bounded by the file
        if item_type == GGUFValueType.STRING:
            return [cursor.string(strict=True) for _ in range(length)]
        fmt = _SCALARS[item_type]
        return [cursor.take(fmt) for _ in range(length)]
    if item_type == GGUFValueType.STRING:
        for _ in range(length):
            cursor.skip_string()
        return None
    fmt = _SCALARS[item_type]
    if length > SMALL_ARRAY:
        cursor.offset += length * struct.calcsize(fmt)
        if cursor.offset > len(cursor.data):
            raise UnsupportedModelError("GGUF header ends early: the file is truncated")
        return None
    return tuple(cursor.take(fmt) for _ in range(length))


def _read_tensor(cursor: _Cursor) -> GgufTensor:
    name = cursor.string()
    n_dims = int(cursor.take("<I"))
    if n_dims > MAX_DIMS:
        raise UnsupportedModelError(f"GGUF tensor {name} has {n_dims} dimensions")
    shape = tuple(int(cursor.take("<Q")) for _ in range(n_dims))
    raw_type = int(cursor.take("<I"))
    cursor.take("<Q")  # data offset: not needed to size the model
    try:
        quant_type = GGMLQuantizationType(raw_type)
    except ValueError:
        raise UnsupportedModelError(f"GGUF tensor {name} has unknown type {raw_type}") from None
    return GgufTensor(name, shape, quant_type)


def parse_gguf_header(data: mmap.mmap | bytes, keep: Container[str] = ()) -> GgufHeader:
    """Parse the header of GGUF bytes (a memory map or a bytes object); arrays named in
    ``keep`` in full."""
    cursor = _Cursor(data)
    if cursor.take("<I") != GGUF_MAGIC:
        raise UnsupportedModelError("not a GGUF file (bad magic)")
    version = int(cursor.take("<I"))
    if version not in (2, 3):
        raise UnsupportedModelError(f"GGUF version {version} is not supported (2 or 3 are)")
    tensor_count = cursor.count(MAX_TENSORS, "tensors")
    kv_count = cursor.count(len(data), "metadata keys")
    metadata: dict[str, MetadataValue] = {}
    lengths: dict[str, int] = {}
    for _ in range(kv_count):
        key = cursor.string()
        value_type = _value_type(cursor)
        if value_type == GGUFValueType.STRING:
            metadata[key] = cursor.string()
        elif value_type == GGUFValueType.ARRAY:
            metadata[key] = _read_array(cursor, key, lengths, keep)
        else:
            metadata[key] = cursor.take(_SCALARS[value_type])
    tensors = tuple(_read_tensor(cursor) for _ in range(tensor_count))
    return GgufHeader(version, metadata, lengths, tensors)


def read_gguf_header(path: Path, keep: Container[str] = ()) -> GgufHeader:
    """Read the header of the GGUF file at ``path`` (arrays named in ``keep`` in full)."""
    try:
        with path.open("rb") as file:
            if path.stat().st_size == 0:
                raise UnsupportedModelError(f"{path} is empty")
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return parse_gguf_header(data, keep)
    except OSError as exc:
        raise UnsupportedModelError(f"cannot read {path}: {exc.strerror or exc}") from exc
