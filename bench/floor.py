"""The floor under a runtime's latency on this CPU: every product of the model (its convs,
projections, FFNs, attention's two products) timed alone on that runtime's own kernels, in
each precision it offers and, for a conv, both as a convolution and as its im2col product,
the fastest taken; and nothing else costing time (no norm, activation, softmax, layout change
or quantization of activations between them).

A model that computes these products with these kernels can come near its runtime's floor on
this CPU, not far under it (within a graph a runtime can keep its own layouts between ops and
fuse what follows a product, which a lone product cannot); a latency target far below the
floor needs another kind of kernel (a lower precision than int8) or another CPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

from hubert_fix.onnxio.openvino import HINTS, float_precisions


@dataclass(frozen=True)
class Product:
    """``count`` products of [batch, m, k] by [batch, k, n]; ``constant``: the right operand is a
    weight. A conv's (``conv``: kernel, stride; ``batch`` its groups, ``m`` its output frames)
    is also timed as that convolution, unpadded."""

    what: str
    batch: int
    m: int
    k: int
    n: int
    count: int
    constant: bool
    conv: tuple[int, int] | None = None

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.m * self.k * self.n * self.count


def products(config: dict[str, object], samples: int) -> list[Product]:
    """HuBERT's products for one utterance of ``samples``, from the fairseq config: the conv
    feature extractor, post_extract_proj, the positional conv (one product per group), and per
    layer the q/k/v/out projections, the FFN and the two attention products."""
    convs = eval(str(config["conv_feature_layers"]))  # fairseq's own format: a Python list literal
    found, length, channels = [], samples, 1
    for index, (out_channels, kernel, stride) in enumerate(convs):
        length = (length - kernel) // stride + 1
        found.append(Product(f"conv {index}", 1, length, channels * kernel, out_channels, 1, True, (kernel, stride)))
        channels = out_channels
    width, ffn = int(config["encoder_embed_dim"]), int(config["encoder_ffn_embed_dim"])
    layers, heads, groups = (
        int(config[key]) for key in ("encoder_layers", "encoder_attention_heads", "conv_pos_groups")
    )
    per_group, kernel = width // groups, int(config["conv_pos"])
    return [
        *found,
        Product("post_extract_proj", 1, length, channels, width, 1, True),
        Product("positional conv", groups, length, per_group * kernel, per_group, 1, True, (kernel, 1)),
        Product("q, k, v, out projections", 1, length, width, width, 4 * layers, True),
        Product("fc1", 1, length, width, ffn, layers, True),
        Product("fc2", 1, length, ffn, width, layers, True),
        Product("attention QK^T", heads, length, width // heads, length, layers, False),
        Product("attention PV", heads, length, length, width // heads, layers, False),
    ]


def measure_floors_alone(config: dict[str, object], samples: int, runs: int) -> dict[str, object]:
    """``measure_floors`` in a fresh process: no other runtime's threads or buffers beside it (in
    bench/run.py's process, after the latency rounds, attention's products took up to 2.3 times as
    long, and OpenVINO's floor came out 28% higher)."""
    done = subprocess.run(
        [sys.executable, __file__, json.dumps(config), str(samples), str(runs)], capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"bench: the floor failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def measure_floors(config: dict[str, object], samples: int, runs: int) -> dict[str, object]:
    """Each product's ms per kernel and form (1 thread, the fastest of ``runs`` after 2 warm-ups:
    a floor), and each runtime's floor: the sum over products of ``count`` x its fastest kernel
    and form there."""
    import openvino as ov

    # int8, then the float precisions this CPU computes in, labelled by OpenVINO's names (f32, bf16)
    kernels = {f"OpenVINO {HINTS.get(p, p)}": _openvino(ov, p) for p in ["int8", *reversed(float_precisions())]}
    kernels |= {"ORT int8": _onnxruntime("int8"), "ORT fp32": _onnxruntime("fp32")}
    found = products(config, samples)
    timed: dict[str, dict[str, dict[str, float]]] = {}
    for product in found:
        forms = ["product", "convolution"] if product.conv else ["product"]
        timed[product.what] = {
            label: {form: _fastest_ms(make(product, _operands(product, form), form), runs) for form in forms}
            for label, make in kernels.items()
        }
    runtimes = {
        "OpenVINO": [label for label in kernels if label.startswith("OpenVINO")],
        "ONNX Runtime int8": ["ORT int8", "ORT fp32"],
        "ONNX Runtime fp32": ["ORT fp32"],
    }
    counts = {p.what: p.count for p in found}
    floors = {
        runtime: round(sum(counts[what] * min(min(by[k].values()) for k in allowed) for what, by in timed.items()), 1)
        for runtime, allowed in runtimes.items()
    }
    return {"products_ms": timed, "floor_ms": floors, "kernels": runtimes}


def _operands(product: Product, form: str) -> list[np.ndarray]:
    """The input and the weight (or the other activation): [batch, m, k] and [batch, k, n] (no batch
    axis when batch is 1), or a convolution's [1, C, frames] and [C_out, C / groups, kernel]."""
    rng = np.random.default_rng(0)
    if form == "convolution":
        kernel, stride = product.conv
        channels = product.k // kernel * product.batch
        left = np.abs(rng.standard_normal([1, channels, (product.m - 1) * stride + kernel]))
        right = rng.standard_normal([product.n * product.batch, product.k // kernel, kernel]) * 0.05
    else:
        lead = [product.batch] if product.batch > 1 else []
        left = np.abs(rng.standard_normal([*lead, product.m, product.k]))
        right = rng.standard_normal([*lead, product.k, product.n]) * (0.05 if product.constant else 1)
    return [left.astype(np.float32), right.astype(np.float32)]


def _fastest_ms(run, runs: int) -> float:
    """The fastest of ``runs`` calls of ``run`` after 2 warm-ups: the kernel, its operands already in
    place (neither runtime copies them in or the result out), so no copy is counted in the floor."""
    run(), run()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return round(min(samples) * 1e3, 2)


def _int8(weight: np.ndarray, over: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 levels and float scales, one per output channel: the maximum ``over`` those axes."""
    scale = np.abs(weight).max(axis=over, keepdims=True) / 127
    return np.clip(np.rint(weight / scale), -127, 127).astype(np.int8), scale.astype(np.float32)


def _openvino(ov, precision: str):
    """OpenVINO's CPU plugin: int8 as NNCF writes it (FakeQuantize on activations, int8 weights
    per output channel), or float in ``precision`` (fp32, bf16)."""
    import openvino.opset13 as ops

    def fake_quantize(node, low: float, high: float):
        low_, high_ = (ops.constant(np.array(v, np.float32)) for v in (low, high))
        return ops.fake_quantize(node, low_, high_, low_, high_, 256)

    def make(product: Product, inputs: list[np.ndarray], form: str):
        left, right = inputs
        x = ops.parameter(list(left.shape), ov.Type.f32)
        parameters = [x]
        if form == "convolution" and product.batch > 1:
            right = right.reshape(product.batch, -1, *right.shape[1:])  # [groups, C_out / groups, C / groups, k]
        if not product.constant:
            other = ops.parameter(list(right.shape), ov.Type.f32)
            parameters.append(other)
        elif precision == "int8":
            levels, scale = _int8(right, (-2,) if form == "product" else (-2, -1))
            other = ops.multiply(ops.convert(ops.constant(levels), ov.Type.f32), ops.constant(scale))
        else:
            other = ops.constant(right)
        if precision == "int8":
            x = fake_quantize(x, 0.0, float(left.max()))
            if not product.constant:
                other = fake_quantize(other, float(right.min()), float(right.max()))
        if form == "product":
            output = ops.matmul(x, other, False, False)
        else:
            convolve = ops.group_convolution if product.batch > 1 else ops.convolution
            output = convolve(x, other, [product.conv[1]], [0], [0], [1])
        hint = HINTS.get(precision, HINTS["fp32"])  # int8: its float parts in fp32
        compiled = ov.Core().compile_model(
            ov.Model([output], parameters), "CPU", {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": hint}
        )
        request = compiled.create_infer_request()
        feeds = inputs[: len(parameters)]
        return lambda: request.infer(feeds, share_inputs=True, share_outputs=True)  # no copy either way

    return make


def _onnxruntime(precision: str):
    """ONNX Runtime's CPU provider: fp32 MatMul and Conv, or int8 as ``optimize --int8`` writes a
    product (DynamicQuantizeLinear, MatMulInteger, Cast, Mul: one fused kernel for a 2-D weight)
    and ConvInteger the same way."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    def make(product: Product, inputs: list[np.ndarray], form: str):
        left, right = inputs
        graph_inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(left.shape))]
        weights, feeds, nodes = [], {"x": left}, []
        integer = {"product": "MatMulInteger", "convolution": "ConvInteger"}[form]
        attributes = {"group": product.batch, "strides": [product.conv[1]]} if form == "convolution" else {}
        if precision == "int8":
            nodes.append(helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]))
            if product.constant:
                levels, scale = _int8(right, (-2,) if form == "product" else (-2, -1))
                per_column = form == "product" and right.ndim == 2  # what the fused kernel takes
                zero = np.zeros(scale.size if per_column else (), np.int8)
                scale = scale.reshape(-1) if per_column else np.float32(scale.max())
                weights = [
                    numpy_helper.from_array(np.asarray(a), n) for a, n in ((levels, "wq"), (zero, "wz"), (scale, "ws"))
                ]
            else:
                graph_inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, list(right.shape)))
                feeds["r"] = right
                nodes.append(helper.make_node("DynamicQuantizeLinear", ["r"], ["wq", "ws", "wz"]))
            nodes += [
                helper.make_node(integer, ["xq", "wq", "xz", "wz"], ["p"], **attributes),
                helper.make_node("Cast", ["p"], ["f"], to=TensorProto.FLOAT),
                helper.make_node("Mul", ["xs", "ws"], ["s"]),
                helper.make_node("Mul", ["f", "s"], ["y"]),
            ]
        else:
            if product.constant:
                weights = [numpy_helper.from_array(right, "r")]
            else:
                graph_inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, list(right.shape)))
                feeds["r"] = right
            nodes.append(helper.make_node("MatMul" if form == "product" else "Conv", ["x", "r"], ["y"], **attributes))
        graph = helper.make_graph(
            nodes, "product", graph_inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], weights
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        binding = session.io_binding()  # the inputs read in place, the output written into one array
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        output = np.empty(session.run(None, feeds)[0].shape, np.float32)
        binding.bind_ortvalue_output("y", ort.OrtValue.ortvalue_from_numpy(output))
        return lambda: (session.run_with_iobinding(binding), output)[1]

    return make


if __name__ == "__main__":  # measure_floors_alone's process: CONFIG_JSON SAMPLES RUNS
    print(json.dumps(measure_floors(json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))
