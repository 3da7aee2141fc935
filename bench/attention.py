"""Would fused attention make `optimize` faster? ONNX Runtime's contrib kernels against the
unfused graph fairseq's export gives, at HuBERT base's sizes (768 wide, 12 heads), 1 thread.

    .venv/bin/python bench/attention.py [--frames 500,50,25] [--runs 15]

Three pairs, each timed interleaved (median of ``--runs`` after one warm-up), outputs
compared first:

1. the attention core, time-first as fairseq exports it (Reshape to [T, B*H, d],
   Transpose, Q and K each scaled by d^-1/4, QK^T + key-padding mask, Softmax, xV, back
   to [T*B, D]) against ``com.microsoft.MultiHeadAttention`` with an int32 key padding
   mask (plus the two Transposes a time-first graph needs around it);
2. the same with the Q/K/V projections (3 MatMul + Add) against ``com.microsoft.Attention``
   with packed QKV weights and a mask index;
3. (2) as ``optimize --int8`` writes it (one DynamicQuantizeLinear, 3 MatMulInteger with
   per-column int8 weights) against ``com.microsoft.QAttention``.

500 frames is 10 s of audio, 50 and 25 the 1 s and 0.5 s chunks. Prints one line per pair
and length: milliseconds per layer, the ratio, and what 12 layers would save.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

D, H = 768, 12
HEAD = D // H
VALID_LESS = 7  # padded frames at the end of the utterance


def _i64(name: str, values: list[int]):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _core(frames: int) -> tuple[list, list]:
    """fairseq's exported attention from q, k, v [T, 1, D] and the additive mask m [1, 1, 1, T] to out [T, D]."""
    node = helper.make_node
    nodes = []
    for x in "qkv":
        nodes += [
            node("Reshape", [x, "heads"], [f"{x}1"]),
            node("Transpose", [f"{x}1"], [f"{x}2"], perm=[1, 0, 2]),
            node("Reshape", [f"{x}2", "split"], [f"{x}3"]),
        ]
    nodes += [
        node("Mul", ["q3", "scale"], ["q4"]),
        node("Transpose", ["k3"], ["k4"], perm=[0, 1, 3, 2]),
        node("Mul", ["k4", "scale"], ["k5"]),
        node("MatMul", ["q4", "k5"], ["scores"]),
        node("Add", ["scores", "m"], ["masked"]),
        node("Softmax", ["masked"], ["p"], axis=-1),
        node("MatMul", ["p", "v3"], ["o"]),
        node("Transpose", ["o"], ["o1"], perm=[2, 0, 1, 3]),
        node("Reshape", ["o1", "flat"], ["out"]),
    ]
    constants = [
        _i64("heads", [frames, H, HEAD]),
        _i64("split", [1, H, frames, HEAD]),
        numpy_helper.from_array(np.array(HEAD**-0.25, np.float32), "scale"),
    ]
    return nodes, constants


def _projections(weights: list[np.ndarray], biases: list[np.ndarray], int8: bool) -> tuple[list, list]:
    """x [T, 1, D] to q, k, v: float MatMul + Add, or what optimize --int8 writes."""
    node = helper.make_node
    nodes, constants = [], []
    if int8:
        nodes.append(node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]))
        constants.append(numpy_helper.from_array(np.zeros(D, np.int8), "wz"))
    for i, (x, w, b) in enumerate(zip("qkv", weights, biases)):
        constants.append(numpy_helper.from_array(b, f"b{i}"))
        if not int8:
            constants.append(numpy_helper.from_array(w, f"w{i}"))
            nodes += [node("MatMul", ["x", f"w{i}"], [f"{x}m"]), node("Add", [f"{x}m", f"b{i}"], [x])]
            continue
        levels, scale = _symmetric(w)
        constants += [numpy_helper.from_array(levels, f"w{i}"), numpy_helper.from_array(scale, f"ws{i}")]
        nodes += [
            node("Mul", ["xs", f"ws{i}"], [f"{x}s"]),
            node("MatMulInteger", ["xq", f"w{i}", "xz", "wz"], [f"{x}i"]),
            node("Cast", [f"{x}i"], [f"{x}f"], to=TensorProto.FLOAT),
            node("Mul", [f"{x}f", f"{x}s"], [f"{x}m"]),
            node("Add", [f"{x}m", f"b{i}"], [x]),
        ]
    return nodes, constants


def _symmetric(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = (np.abs(w).max(axis=0) / 127).astype(np.float32)
    return np.clip(np.rint(w / scale), -127, 127).astype(np.int8), scale


def _session(nodes: list, constants: list, inputs: list, frames: int) -> ort.InferenceSession:
    graph = helper.make_graph(
        nodes, "attention", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, [frames, D])], constants
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _fused(op: str, frames: int, weights: list[np.ndarray], biases: list[np.ndarray]) -> tuple[list, list, list]:
    """The contrib op between a Transpose to [1, T, D] and one back to [T, D]."""
    node = helper.make_node
    ms = "com.microsoft"
    head = [node("Transpose", [x], [f"{x}t"], perm=[1, 0, 2]) for x in ("qkv" if op == "MultiHeadAttention" else "x")]
    tail = [node("Transpose", ["o"], ["o1"], perm=[1, 0, 2]), node("Reshape", ["o1", "flat"], ["out"])]
    constants = [_i64("flat", [frames, D])]
    if op == "MultiHeadAttention":
        fused = [node(op, ["qt", "kt", "vt", "", "kpm"], ["o"], domain=ms, num_heads=H)]
        return head + fused + tail, constants, [_mask_input("kpm", [1, frames])]
    packed_bias = numpy_helper.from_array(np.concatenate(biases), "bp")
    if op == "Attention":
        constants += [numpy_helper.from_array(np.concatenate(weights, axis=1), "wp"), packed_bias]
        fused = [node(op, ["xt", "wp", "bp", "mi"], ["o"], domain=ms, num_heads=H)]
    else:
        levels, scales = zip(*(_symmetric(w) for w in weights))
        constants += [
            numpy_helper.from_array(np.concatenate(levels, axis=1), "wp"),
            packed_bias,
            numpy_helper.from_array(np.concatenate(scales), "wsp"),
            numpy_helper.from_array(np.zeros(3 * D, np.int8), "wzp"),
        ]
        fused = [
            node("DynamicQuantizeLinear", ["xt"], ["xq", "xs", "xz"]),
            node(op, ["xq", "wp", "bp", "xs", "wsp", "mi", "xz", "wzp"], ["o"], domain=ms, num_heads=H),
        ]
    return head + fused + tail, constants, [_mask_input("mi", [1])]


def _mask_input(name: str, shape: list[int]):
    return helper.make_tensor_value_info(name, TensorProto.INT32, shape)


def _float_input(name: str, shape: list[int]):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _timed(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> float:
    start = time.perf_counter()
    session.run(None, feeds)
    return time.perf_counter() - start


def measure(op: str, frames: int, runs: int, rng: np.random.Generator) -> str:
    weights = [rng.standard_normal((D, D), dtype=np.float32) * 0.03 for _ in range(3)]
    biases = [rng.standard_normal(D, dtype=np.float32) * 0.1 for _ in range(3)]
    core, constants = _core(frames)
    flat = [_i64("flat", [frames, D])]
    mask = np.zeros((1, 1, 1, frames), np.float32)
    mask[..., frames - VALID_LESS :] = -np.inf
    valid = np.ones((1, frames), np.int32)
    valid[:, frames - VALID_LESS :] = 0
    x = {name: rng.standard_normal((frames, 1, D), dtype=np.float32) for name in "qkvx"}
    if op == "MultiHeadAttention":
        inputs = [_float_input(name, [frames, 1, D]) for name in "qkv"]
        unfused = _session(core, constants + flat, [*inputs, _float_input("m", [1, 1, 1, frames])], frames)
        feeds = {name: x[name] for name in "qkv"}
        fused_feeds = {**feeds, "kpm": valid}
    else:
        projections, weights_in = _projections(weights, biases, int8=op == "QAttention")
        inputs = [_float_input("x", [frames, 1, D])]
        unfused = _session(
            projections + core, constants + flat + weights_in, [*inputs, _float_input("m", [1, 1, 1, frames])], frames
        )
        feeds = {"x": x["x"]}
        fused_feeds = {**feeds, "mi": np.array([frames - VALID_LESS], np.int32)}
    nodes, fused_constants, mask_inputs = _fused(op, frames, weights, biases)
    fused = _session(nodes, fused_constants, [*inputs, *mask_inputs], frames)
    a, b = unfused.run(None, {**feeds, "m": mask})[0], fused.run(None, fused_feeds)[0]
    differ = float(np.abs(a - b).max() / np.abs(a).max())
    times = {"unfused": [], "fused": []}
    _timed(unfused, {**feeds, "m": mask}), _timed(fused, fused_feeds)
    for _ in range(runs):
        times["unfused"].append(_timed(unfused, {**feeds, "m": mask}))
        times["fused"].append(_timed(fused, fused_feeds))
    u, f = (float(np.median(times[k])) * 1e3 for k in ("unfused", "fused"))
    return (
        f"{op:>18} {frames:4d} frames: unfused {u:7.2f} ms, fused {f:7.2f} ms, ratio {f / u:.2f}, "
        f"12 layers save {12 * (u - f):6.1f} ms (max rel diff {differ:.1e})"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument(
        "--frames",
        default="500,50,25",
        help="comma-separated sequence lengths in frames (default 500,50,25: 10 s, 1 s, 0.5 s)",
    )
    parser.add_argument(
        "--runs", type=int, default=15, help="timed runs per pair and length, after one warm-up (default 15)"
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    rng = np.random.default_rng(0)
    print(f"onnxruntime {ort.__version__}, 1 thread")
    for op in ("MultiHeadAttention", "Attention", "QAttention"):
        for frames in map(int, args.frames.split(",")):
            print(measure(op, frames, args.runs, rng), flush=True)


if __name__ == "__main__":
    main()
