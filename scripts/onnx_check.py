#!/usr/bin/env python3
"""Checks an ONNX file exported by SwiftAI against SwiftAI's own outputs (run by Tests/SwiftAIDeployTests/ONNXTests.swift).

usage: onnx_check.py MODEL.onnx CASES.safetensors

CASES holds `input_<n>` and `expected_<n>` float32 tensors (SwiftAI's inputs and outputs at batch size n) and, in its
metadata, `initializers`: state-dict keys (comma-separated) that must be initializers of the graph. The script runs
onnx's full checker, checks the graph's interface (opset 17, IR 8, `input` [batch, C, H, W] -> `logits`, dynamic
`batch`), runs onnxruntime on every input and requires |got - expected| <= 1e-4 + 1e-4 * |expected|. It prints one
line per batch size with the largest absolute difference and exits non-zero on the first failure.
"""
import json
import struct
import sys

import numpy as np
import onnx
import onnxruntime as ort

ATOL = RTOL = 1e-4


def read_safetensors(path):
    """The float32 tensors and the metadata of a safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    metadata = header.pop("__metadata__", {})
    body = data[8 + n:]
    tensors = {}
    for name, info in header.items():
        if info["dtype"] != "F32":
            sys.exit(f"FAIL: {path}: {name} is {info['dtype']}, expected F32")
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(body[start:end], dtype="<f4").reshape(info["shape"])
    return tensors, metadata


def dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    model_path, cases_path = sys.argv[1:]
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)

    graph = model.graph
    opsets = {o.domain: o.version for o in model.opset_import}
    problems = []
    if model.ir_version != 8 or opsets.get("", None) != 17 or model.producer_name != "SwiftAI":
        problems.append(f"ir_version {model.ir_version}, opsets {opsets}, producer {model.producer_name!r}")
    if [i.name for i in graph.input] != ["input"] or [o.name for o in graph.output] != ["logits"]:
        problems.append(f"inputs {[i.name for i in graph.input]}, outputs {[o.name for o in graph.output]}")
    elif len(dims(graph.input[0])) != 4 or dims(graph.input[0])[0] != "batch" or dims(graph.output[0])[0] != "batch":
        problems.append(f"input dims {dims(graph.input[0])}, output dims {dims(graph.output[0])}: batch must be dynamic")

    cases, metadata = read_safetensors(cases_path)
    names = {t.name for t in graph.initializer}
    missing = [k for k in metadata.get("initializers", "").split(",") if k and k not in names]
    if missing:
        problems.append(f"{len(missing)} state-dict keys are not initializers, e.g. {missing[:5]}")
    if problems:
        sys.exit("FAIL: " + "; ".join(problems))

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    batches = sorted(int(k.split("_")[1]) for k in cases if k.startswith("input_"))
    if not batches:
        sys.exit(f"FAIL: {cases_path} has no input_<n> tensors")
    for n in batches:
        x, want = cases[f"input_{n}"], cases[f"expected_{n}"]
        (got,) = session.run(["logits"], {"input": x})
        if got.shape != want.shape:
            sys.exit(f"FAIL: batch {n}: onnxruntime output shape {got.shape}, SwiftAI {want.shape}")
        diff = np.abs(got.astype(np.float64) - want)
        excess = diff - (ATOL + RTOL * np.abs(want))
        worst = np.unravel_index(np.argmax(excess), excess.shape)
        if not np.all(np.isfinite(got)) or excess[worst] > 0:
            sys.exit(f"FAIL: batch {n}: onnxruntime {got[worst]} vs SwiftAI {want[worst]} at {worst} "
                     f"(|diff| {diff[worst]:.3g} > {ATOL} + {RTOL}·|expected|); max |diff| {diff.max():.3g}")
        print(f"batch {n}: output {list(got.shape)}, max |diff| {diff.max():.3g} "
              f"(max |expected| {np.abs(want).max():.3g})")
    print(f"OK: {len(graph.node)} nodes, {len(graph.initializer)} initializers")


if __name__ == "__main__":
    main()
