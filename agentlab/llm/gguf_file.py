"""What a GGUF file says about itself: how it is quantized (``general.file_type``), and the serving label an
evaluation record carries ("llama.cpp Q4_1"), so that a base model's records and its trained checkpoint's
show they were served alike. The file type is read from the header alone (a tokenizer's arrays can take
seconds to parse); names and tensor types come from the ``gguf`` package, or the copy in llama.cpp's source
tree (``agentlab.llm.llamacpp.source_tree``) where the package is not installed."""

from __future__ import annotations

import functools
import struct
import sys
from pathlib import Path
from typing import Any

from agentlab.errors import AgentlabError

# GGUF metadata value types: the size of each fixed-size one; 8 is a string, 9 an array
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


class GgufError(AgentlabError):
    """A file that is not a readable GGUF, or one that does not say how it is quantized."""


def gguf_module() -> Any:
    """The ``gguf`` package: installed (the ``train`` extra), else the one in llama.cpp's source tree."""
    try:
        import gguf
    except ImportError:
        from agentlab.llm.llamacpp import source_tree

        sys.path.append(str(source_tree() / "gguf-py"))  # appended: an installed package would win
        import gguf
    return gguf


def file_type(path: Path | str) -> int:
    """The GGUF's ``general.file_type``: llama.cpp's ``llama_ftype`` (1 = F16, 3 = Q4_1, 15 = Q4_K_M, ...),
    which ``llama-quantize`` takes as its type argument."""
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise GgufError(f"GGUF file not found: {p}")
    st = p.stat()
    return _file_type(str(p), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)  # keyed by size and mtime too: a rewritten file is read again
def _file_type(path: str, size: int, mtime_ns: int) -> int:
    """Scan the metadata up to ``general.file_type`` (it comes before the tokenizer's arrays)."""
    with open(path, "rb") as f:
        try:
            magic, version, _, n_keys = struct.unpack("<4sIQQ", f.read(24))
            if magic != b"GGUF" or version < 2:
                raise ValueError(f"no GGUF v2+ header ({magic!r}, version {version})")
            for _ in range(n_keys):
                key = f.read(_unpack(f, "<Q"))
                value_type = _unpack(f, "<I")
                if key == b"general.file_type" and value_type in _SCALAR_SIZES:
                    return int.from_bytes(f.read(_SCALAR_SIZES[value_type]), "little")
                _skip_value(f, value_type)
        except (ValueError, KeyError, struct.error) as exc:
            raise GgufError(f"{path} is not a readable GGUF file: {exc}") from None
    raise GgufError(f"{path} does not say how it is quantized (no general.file_type): re-save it with "
                    "llama.cpp's convert_hf_to_gguf.py or llama-quantize")


def _unpack(f: Any, fmt: str) -> int:
    return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]


def _skip_value(f: Any, value_type: int) -> None:
    if value_type == _STRING:
        f.seek(_unpack(f, "<Q"), 1)
    elif value_type == _ARRAY:
        item_type, count = _unpack(f, "<I"), _unpack(f, "<Q")
        if item_type in _SCALAR_SIZES:
            f.seek(_SCALAR_SIZES[item_type] * count, 1)
        else:
            for _ in range(count):
                _skip_value(f, item_type)
    else:
        f.seek(_SCALAR_SIZES[value_type], 1)


def quantization(path: Path | str) -> str:
    """The file type's name as llama.cpp's tools spell it: "Q4_1", "Q4_K_M", "F16", "F32"."""
    return type_name(file_type(path))


def type_name(ftype: int) -> str:
    """A ``general.file_type`` number's name as llama.cpp's tools spell it (7: "Q8_0")."""
    try:
        name = gguf_module().LlamaFileType(ftype).name
    except ValueError:  # a type newer than this gguf package
        return f"ftype-{ftype}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def tensor_types(path: Path | str) -> dict[str, str]:
    """Each tensor's type, by name ({"blk.0.attn_v.weight": "Q8_0", ...}): a quantization type such as Q4_K_M
    mixes several, chosen per tensor."""
    return {t.name: t.tensor_type.name for t in gguf_module().GGUFReader(str(path)).tensors}


def serving_label(engine: str, model: str) -> str:
    """What records name as the serving: the engine and, for a local GGUF, its quantization
    ("llama.cpp Q4_1"); empty for an endpoint we cannot look inside."""
    if engine == "external":
        return ""
    if engine == "llama.cpp" and Path(model).suffix == ".gguf" and Path(model).is_file():
        return f"llama.cpp {quantization(model)}"
    return engine
