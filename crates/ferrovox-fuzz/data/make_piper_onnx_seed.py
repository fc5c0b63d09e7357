"""Writes the piper-onnx fuzz seed: a small ONNX model laid out as a Piper VITS export is
(the text embedding gathered by `/enc_p/emb`, decoder convolutions under `/dec/...`, weights
named by the state dict or by the node that consumes them, raw and typed tensor data, node
attributes of every kind), so mutations start past the protobuf and the weight naming.

Run with a Python that has `onnx` (e.g. the venv `cargo xtask fixtures` makes):
    python make_piper_onnx_seed.py ../corpus/piper-onnx/small.onnx
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(7)


def weight(name, *shape):
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


emb = weight("onnx::Gather_7", 12, 8)
conv_w = weight("onnx::Conv_9", 16, 8, 7)
conv_b = weight("dec.conv_pre.bias", 16)
proj = weight("enc_p.proj.weight", 4, 8, 1)
typed = helper.make_tensor("dp.flows.0.m", TensorProto.FLOAT, [2, 1], [0.5, -0.25])
shape = helper.make_tensor("onnx::Reshape_3", TensorProto.INT64, [3], [1, -1, 8])
exp = numpy_helper.from_array(np.array([[1.5], [0.75]], np.float32), "/dp/flows.0/Exp_output_0")

nodes = [
    helper.make_node("Gather", ["onnx::Gather_7", "input"], ["e"], name="/enc_p/emb/Gather"),
    helper.make_node("Transpose", ["e"], ["et"], name="/enc_p/Transpose", perm=[0, 2, 1]),
    helper.make_node(
        "Conv",
        ["et", "onnx::Conv_9", "dec.conv_pre.bias"],
        ["y"],
        name="/dec/conv_pre/Conv",
        kernel_shape=[7],
        pads=[3, 3],
        dilations=[1],
    ),
    helper.make_node("LeakyRelu", ["y"], ["z"], name="/dec/LeakyRelu", alpha=0.1),
    helper.make_node("Reshape", ["z", "onnx::Reshape_3"], ["output"], name="/dec/Reshape"),
]
graph = helper.make_graph(
    nodes,
    "piper",
    [helper.make_tensor_value_info("input", TensorProto.INT64, [1, None])],
    [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
    initializer=[emb, conv_w, conv_b, proj, typed, shape, exp],
)
model = helper.make_model(graph, producer_name="ferrovox-fuzz-seed")
onnx.save(model, sys.argv[1])
