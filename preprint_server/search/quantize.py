"""The int8 graph that search queries run through: the fp32 encoder graph, smoothed, then quantized.

Plain dynamic int8 (weights per output channel, each activation tensor with one scale computed at run
time) bends a query vector too far: cosine 0.992 to the fp32 vector, 85% of the top-10 papers of a
semantic search kept. A few hidden channels after each LayerNorm are 15-30x larger than the median
one and take the whole int8 range of their tensor, so the other channels keep a few levels each.
SmoothQuant (Xiao et al., 2023) moves part of that range into the weights: each input channel j of
a weight MatMul is divided by s_j (a Mul node before it) and row j of the weights multiplied by s_j,
so the float result is the same, with s_j = max|x_j| ** alpha / max|W_j| ** (1 - alpha) measured on
calibration sentences. The cosine to fp32 then is 0.9978 on queries and paper chunks the calibration
never saw. What is left comes mostly from the second MatMul of the feed-forward blocks (its input is
the GELU output, with ranges up to 24 in the first layers): keeping it in fp32 in the first
FP32_FFN_LAYERS layers brings the cosine to 0.9986 (all six layers: 0.9991 at twice the CPU).
Measured on one core: fp32 7.1 ms per query, plain int8 2.3 ms, this graph 2.6 ms.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

import numpy as np

from preprint_server.search.encoder import atomic_write, feed, onnx_path, tokenizer
from preprint_server.search.quiet import root_logging_to

log = logging.getLogger(__name__)
QUANT_VERSION = 2  # bump when the smoothing, calibration or quantization below changes: the file name includes it
# SmoothQuant's migration strength: how much of an activation channel's range moves into the weights
# (mean cosine to fp32 over held-out queries and paper chunks: 0.992-0.993 without smoothing; 0.996-0.998
# at 0.6-0.75, best and least sensitive to the calibration text at 0.7; 0.986-0.998 at 0.85; 0.988 at 0.5)
SMOOTHING_ALPHA = 0.7
FP32_FFN_LAYERS = 2  # layers 0 and 1 keep their feed-forward output MatMul in fp32 (see above)
# What the per-channel activation ranges are measured on: sentences like the searches the server gets
CALIBRATION = (
    "how do verifier votes improve accuracy on grade school math",
    "self-consistency with many sampled chains and a majority vote",
    "which prompting technique helps small models solve competition problems",
    "a judge model rejects wrong final answers before voting",
    "temperature and the number of samples under a fixed token budget",
    "fine-tuning a 135M model on arithmetic with supervised examples",
    "papers that compare chain-of-thought with program-aided reasoning",
    "why does the accuracy drop when the context gets longer",
    "reward models for ranking candidate solutions",
    "MATH-500 results with Qwen 0.5B and greedy decoding",
    "decomposing a word problem into smaller questions first",
    "a critique and revise loop for algebra answers",
    "how many tokens does a lab spend per correct answer",
    "early stopping of sampling when the votes agree",
    "retrieval of earlier papers to build on their techniques",
    "the effect of few-shot examples chosen by similarity",
    "Can a model check its own arithmetic with a calculator tool?",
    "contrastive decoding for reasoning in small language models",
    "learning rate, batch size and LoRA rank for a short training run",
    "evaluation on AIME 2024 and AMC 2023 with confidence intervals",
    "The quick brown fox jumps over the lazy dog.",
    "ablation: removing the verifier loses four points",
    "tree search over partial solutions with a value estimate",
    "negative results: majority voting did not help on GSM8K",
    # and a few paragraphs, as search results and long queries are
    "We sample eight reasoning chains at temperature 0.7 and let a verifier read each final solution. Only the "
    "chains it accepts vote; when it rejects all of them, every chain votes. On 200 problems this adds 4.5 points "
    "over plain self-consistency at the same token budget, with a 95% confidence interval of [1.2, 7.8].",
    "Our lab built on two earlier reports: one found that longer chains help only when the model is large enough, "
    "the other that a short plan written before solving reduces arithmetic slips. We combine both ideas and test "
    "whether the plan still helps a 0.5B model when the chains are sampled rather than greedy.",
    "Method. Each problem is first restated in one sentence; the model then writes a numbered list of steps, "
    "solves each step, and checks the final answer by substituting it back. Answers that fail the check are "
    "regenerated once. We report accuracy, tokens per problem and the paired McNemar test against the baseline.",
    "Limitations: the evaluation set is small, the judge is the same model as the solver, and results on "
    "competition mathematics (AIME, AMC) are within noise. Training for 21 steps on 1,873 arithmetic rows raised "
    "accuracy from 17.5% to 37.5%, but we did not test whether the gain transfers to word problems.",
)


def query_onnx_path(cache_dir: Path | None = None) -> Path:
    """Where the int8 graph for queries lives, next to the fp32 one it is made from."""
    fp32 = onnx_path(cache_dir)
    return fp32.with_name(f"{fp32.stem}-q8v{QUANT_VERSION}.onnx")


def _activation_ranges(model, inputs: list[str]) -> dict[str, np.ndarray]:
    """Tensor name -> per-channel max |value| over the calibration sentences (one at a time, as
    queries mostly run), for the given input tensors of the fp32 graph."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None) for x in inputs)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    tok = tokenizer()
    ranges: dict[str, np.ndarray] = {}
    for text in CALIBRATION:
        for x, value in zip(inputs, session.run(inputs, feed(tok, [text]))):
            top = np.abs(value).reshape(-1, value.shape[-1]).max(0)
            ranges[x] = np.maximum(ranges[x], top) if x in ranges else top
    return ranges


def quantize_for_queries(src: Path, dest: Path) -> Path:
    """The int8 query graph: `src` smoothed (SmoothQuant), then dynamically quantized (int8 weights
    per output channel, activations per tensor at run time), written atomically to `dest`."""
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    keep_fp32 = [n.name for n in model.graph.node if _is_early_ffn_output(n.name)]
    if len(keep_fp32) != FP32_FFN_LAYERS:  # the exporter named the nodes differently: do not guess
        raise RuntimeError(f"expected {FP32_FFN_LAYERS} feed-forward output MatMuls to keep in fp32, found {keep_fp32}")
    weights = {w.name: w for w in model.graph.initializer}
    consumers: dict[str, list] = {}  # activation -> the MatMuls that multiply it by a weight
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights:
            consumers.setdefault(node.input[0], []).append(node)
    ranges = _activation_ranges(model, list(consumers))
    smoothing = []
    for x, nodes in consumers.items():
        ws = [numpy_helper.to_array(weights[n.input[1]]) for n in nodes]
        w_range = np.max([np.abs(w).max(1) for w in ws], axis=0)
        scale = ranges[x] ** SMOOTHING_ALPHA / np.maximum(w_range, 1e-5) ** (1 - SMOOTHING_ALPHA)
        scale = np.clip(scale, 1e-2, 1e3).astype(np.float32)
        inverse = numpy_helper.from_array((1 / scale).astype(np.float32), f"{x}_smooth_inverse")
        model.graph.initializer.append(inverse)
        mul = onnx.helper.make_node("Mul", [x, inverse.name], [f"{x}_smoothed"], name=f"{x}_smooth")
        for n, w in zip(nodes, ws):  # x / s @ (s * W) == x @ W
            weights[n.input[1]].CopyFrom(numpy_helper.from_array((w * scale[:, None]).astype(np.float32), n.input[1]))
            n.input[0] = mul.output[0]
        smoothing.append((nodes, mul))
    nodes = list(model.graph.node)
    for users, mul in smoothing:  # each Mul just before its first user: the graph stays in order
        nodes.insert(min(nodes.index(u) for u in users), mul)
    model.graph.ClearField("node")
    model.graph.node.extend(nodes)

    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        smoothed = Path(tmp) / "smoothed.onnx"
        onnx.save(model, str(smoothed))
        # the quantizer's advice to pre-process the graph (logged on the root logger) goes to our log
        with root_logging_to(log):
            return atomic_write(dest, lambda out: quantize_dynamic(str(smoothed), out, per_channel=True,
                                                                   weight_type=QuantType.QInt8, nodes_to_exclude=keep_fp32))


def _is_early_ffn_output(name: str) -> bool:
    """`/bert/encoder/layer.<i>/output/dense/MatMul` with i < FP32_FFN_LAYERS (torch.onnx.export's names)."""
    m = re.fullmatch(r".*/layer\.(\d+)/output/dense/MatMul", name)
    return bool(m) and int(m.group(1)) < FP32_FFN_LAYERS
