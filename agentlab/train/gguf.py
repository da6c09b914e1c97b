"""A trained checkpoint as a GGUF that llama.cpp serves as it serves the base: a measured gain is then the
training's, not the engine's (DESIGN.md, decision 8).

    path = checkpoint_gguf(run.checkpoint, run.checkpoint_hash)   # converted once, then read from the cache

A LoRA adapter is merged into its base (a full checkpoint is taken as it is) and saved as plain weights;
llama.cpp's own ``convert_hf_to_gguf.py`` (from the tree its server was built from) writes a GGUF at the
base GGUF's ``general.file_type`` (``llama-quantize`` brings it there, each tensor at the base's type) when
that type has 8 bits or more. A base below 8 bits (Q4_1, Q4_K_M, ...) gives Q8_0 instead: re-quantizing the
merged weights onto the base's 4-bit grid rounds most of the training's changes back to the base's own
values (measured: a LoRA SFT that writes worked solutions in transformers answered like the untrained model
once at Q4_1, and like the trained one at Q8_0). The base's 4-bit values sit on Q8_0's finer grid up to a
small rounding, so the weights differ by the training only; records name the serving ("llama.cpp Q8_0").
The result is cached beside the checkpoint folder, named by the checkpoint's hash:
``<run>/gguf/<hash16>.<QUANT>.gguf``. A checkpoint whose base is not a GGUF (an HF id or folder) has no
quantization to match: the transformers server (``agentlab.train.serve.serve_model``) serves it.

Run as ``python -m agentlab.train.gguf CHECKPOINT`` (prints the GGUF's path).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from agentlab.errors import AgentlabError
from agentlab.llm.gguf_file import file_type, tensor_types, type_name
from agentlab.train.models import checkpoint_meta, export_merged
from agentlab.train.outputs import content_hash

# types the converter writes itself; any other is written as F16 and quantized from there
CONVERTER_OUTTYPES = {0: "f32", 1: "f16", 7: "q8_0", 32: "bf16"}
Q8_0 = 7  # llama.cpp's file type number
EIGHT_BITS_OR_MORE = {0, 1, 7, 32}  # F32, F16, Q8_0, BF16: fine enough to keep a fine-tuning's changes
STEP_TIMEOUT_S = 3600.0


class GgufConversionError(AgentlabError):
    """A checkpoint could not be turned into a GGUF; the message names the step, its log and the fix."""


class NoBaseGguf(GgufConversionError):
    """The checkpoint's base is not a GGUF file: there is no quantization to match."""


def base_gguf(checkpoint: Path | str) -> Path | None:
    """The GGUF the checkpoint was trained from; None when its base is not a GGUF (an HF id or folder)."""
    base = str(checkpoint_meta(checkpoint).get("base") or "")
    if base == "embedded":
        from agentlab.llm.serving import embedded_model_path

        return embedded_model_path()
    if not base.endswith(".gguf"):
        return None
    path = Path(base).expanduser()
    if not path.is_file():
        raise GgufConversionError(f"checkpoint {checkpoint}: its base GGUF {path} is gone; restore it to serve "
                                  "the checkpoint at the base's quantization")
    return path


def checkpoint_gguf(checkpoint: Path | str, checkpoint_hash: str | None = None,
                    threads: int | None = None) -> Path:
    """The checkpoint as a GGUF at its base's quantization, or Q8_0 for a base below 8 bits (converted on first
    use, then cached).
    ``checkpoint_hash``: its content hash when known (``TrainRun.checkpoint_hash``), else computed."""
    checkpoint = Path(checkpoint)
    base = base_gguf(checkpoint)
    if base is None:
        base_ref = checkpoint_meta(checkpoint).get("base")
        raise NoBaseGguf(f"checkpoint {checkpoint}: its base {base_ref!r} is not a GGUF file, so there is no "
                         "quantization to match; serve it with transformers (agentlab.train.serve.serve_model)")
    key = (checkpoint_hash or content_hash(checkpoint))[:16]
    ftype = served_file_type(base)
    out = checkpoint.parent / "gguf" / f"{key}.{type_name(ftype)}.gguf"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.with_suffix(".log")
    log.write_text("")
    with tempfile.TemporaryDirectory(prefix=".convert-", dir=out.parent) as tmp:
        written = _convert(checkpoint, base, ftype, Path(tmp), log, threads or os.cpu_count() or 1)
        os.replace(written, out)  # atomic: a reader never sees half a file
    return out


def served_file_type(base: Path) -> int:
    """The file type a checkpoint of ``base`` is served at: the base's own when it has 8 bits or more, else
    Q8_0 (a 4-bit grid rounds a fine-tuning's changes away)."""
    ftype = file_type(base)
    return ftype if ftype in EIGHT_BITS_OR_MORE else Q8_0


def _convert(checkpoint: Path, base: Path, ftype: int, work: Path, log: Path, threads: int) -> Path:
    """Merge and convert to ``ftype`` (quantizing each tensor as in ``base`` when the converter cannot write
    the type itself), in ``work``; returns the finished GGUF."""
    from agentlab.llm.llamacpp import source_tree, tool_path

    merged = work / "merged"
    # the merge runs in a child process: torch's memory goes back to the system when it exits
    _step("merge", [sys.executable, "-m", "agentlab.train.gguf", "--merge", str(checkpoint), str(merged)],
          log)
    converted = work / "converted.gguf"
    _step("convert", [sys.executable, str(source_tree() / "convert_hf_to_gguf.py"), str(merged),
                      "--outtype", CONVERTER_OUTTYPES.get(ftype, "f16"), "--outfile", str(converted)], log)
    if ftype in CONVERTER_OUTTYPES:
        return converted
    # a type such as Q4_K_M picks some tensors' types by layer, and llama.cpp versions pick differently:
    # each tensor gets the type it has in the base, so the two differ in their weights only
    same_types = work / "tensor-types.txt"
    same_types.write_text("".join(f"^{re.escape(name)}$={kind}\n" for name, kind in tensor_types(base).items()
                                  if kind != "F32"))  # F32: norms and biases, never quantized
    quantized = work / "quantized.gguf"
    _step("quantize", [str(tool_path("llama-quantize")), "--tensor-type-file", str(same_types), str(converted),
                       str(quantized), str(ftype), str(threads)], log)
    return quantized


def _step(what: str, argv: list[str], log: Path) -> None:
    """Run one step of the conversion, its output appended to ``log``; raises with its last line."""
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(argv)}\n")
        fh.flush()
        try:
            done = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, timeout=STEP_TIMEOUT_S,
                                  check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        except subprocess.TimeoutExpired:
            raise GgufConversionError(f"GGUF conversion: the {what} step ran past {STEP_TIMEOUT_S:.0f} s "
                                      f"(log: {log})") from None
    if done.returncode != 0:
        last = next((ln for ln in reversed(log.read_text(errors="replace").splitlines()) if ln.strip()), "")
        # the converter runs with this Python: a missing module is one of the train extra's (sentencepiece...)
        fix = "; pip install 'agentlab[train]'" if "ModuleNotFoundError" in last else ""
        raise GgufConversionError(f"GGUF conversion: the {what} step failed with code {done.returncode}: "
                                  f"{last[:300]} (log: {log}){fix}")


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="A trained checkpoint as a GGUF (its base's quantization, Q8_0 below "
                                             "8 bits).")
    ap.add_argument("checkpoint")
    ap.add_argument("out", nargs="?", help="with --merge: the folder for the merged weights")
    ap.add_argument("--merge", action="store_true", help="only merge it into plain weights (a step)")
    a = ap.parse_args(argv)
    if a.merge:
        export_merged(a.checkpoint, a.out)
    else:
        print(checkpoint_gguf(a.checkpoint))
    return 0


if __name__ == "__main__":
    sys.exit(main())
