"""Loading a base model and a trained checkpoint with transformers (no hub downloads: offline by default).

A model reference is a local directory, a ``.gguf`` file (dequantized into a trainable model; needs the
``gguf`` package) or an HF id already in the local cache. A checkpoint folder holds either LoRA adapter
weights or full weights, plus ``agentlab_checkpoint.json`` naming its base."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

META_FILE = "agentlab_checkpoint.json"


def load_base(ref: str, dtype: Any = None, device: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) for a base model reference."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = dtype or torch.float32
    p = Path(ref)
    if p.suffix == ".gguf":
        kw: dict[str, Any] = {"gguf_file": p.name}
        src = str(p.parent)
    else:
        kw, src = {}, ref
    tok = AutoTokenizer.from_pretrained(src, **kw)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype, **kw)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if p.suffix == ".gguf":  # dequantized to plain float weights: train and save it as an ordinary model
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    if device:
        model.to(device)
    return model, tok


def checkpoint_meta(folder: Path | str) -> dict[str, Any]:
    p = Path(folder) / META_FILE
    return json.loads(p.read_text()) if p.is_file() else {}


def load_checkpoint(folder: Path | str, dtype: Any = None, device: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) of a trained checkpoint: a LoRA adapter is merged into its base."""
    meta = checkpoint_meta(folder)
    if meta.get("finetune") == "lora":
        from peft import PeftModel

        model, tok = load_base(meta["base"], dtype=dtype)
        model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    else:
        model, tok = load_base(str(folder), dtype=dtype)
    if device:
        model.to(device)
    model.eval()
    return model, tok


def export_merged(folder: Path | str, out: Path | str) -> Path:
    """Write a checkpoint as plain merged weights (safetensors, config, tokenizer): what ``vllm serve`` and
    llama.cpp's ``convert_hf_to_gguf.py`` take."""
    model, tok = load_checkpoint(folder)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
