#!/usr/bin/env python3
"""PyTorch's own int8 (FX graph mode, x86/fbgemm backend) of a SwiftAI export bundle, beside SwiftAI's in BENCHMARKS.md.

Loads the bundle's weights into the same PyTorch model (the lesson's models from ../shared/reference/pytorch_fmnist.py,
or fastai's vision model), calibrates with the tensors `swiftai quantize --save-calibration` wrote (the same batches
SwiftAI calibrates with), evaluates on the tensors `swiftai evaluate --save-inputs` wrote, and times batch 1 and 64.
Usage: torch_int8.py BUNDLE CALIB.safetensors INPUTS.safetensors [--threads 2] [--observer histogram|minmax]
Prints one JSON line per figure.
"""
import argparse, io, json, os, sys, time
import torch
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference"))


def build(meta):
    spec = json.loads(meta["model"])
    if spec["kind"] == "lesson":
        from pytorch_fmnist import get_model
        return get_model(spec["arch"])
    if spec["kind"] == "vision_learner":
        import torchvision
        from fastai.vision.learner import create_vision_model
        arch = getattr(torchvision.models, spec["arch"])
        return create_vision_model(arch, spec["n_out"], pretrained=False, n_in=spec["n_in"], lin_ftrs=spec["lin_ftrs"],
                                   ps=spec["ps"], concat_pool=spec["concat_pool"], first_bn=spec["first_bn"],
                                   bn_final=spec["bn_final"], y_range=spec["y_range"])
    raise SystemExit(f"unsupported model {spec}")


def median_ms(f, reps):
    f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2] * 1e3


def accuracy(model, x, y, bs=256):
    with torch.no_grad():
        preds = torch.cat([model(x[i:i + bs]) for i in range(0, len(x), bs)])
    return (preds.argmax(1) == y).float().mean().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle"); ap.add_argument("calib"); ap.add_argument("inputs")
    ap.add_argument("--threads", type=int, default=2); ap.add_argument("--observer", default="histogram")
    ap.add_argument("--reps", type=int, default=7)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.backends.quantized.engine = "x86"
    with safe_open(a.bundle, "pt") as f:
        meta = f.metadata()
    model = build(meta)
    model.load_state_dict(load_file(a.bundle))
    model.eval()
    calib = load_file(a.calib)["inputs"]
    data = load_file(a.inputs)
    x, y = data["inputs"], data["targets"].long()
    name = os.path.basename(os.path.dirname(os.path.abspath(a.bundle))) + "/" + os.path.basename(a.bundle)

    from torch.ao.quantization import QConfigMapping, get_default_qconfig_mapping, QConfig
    from torch.ao.quantization.observer import MinMaxObserver, default_per_channel_weight_observer
    from torch.ao.quantization.quantize_fx import prepare_fx, convert_fx
    qmap = get_default_qconfig_mapping("x86")
    if a.observer == "minmax":
        qmap = QConfigMapping().set_global(QConfig(activation=MinMaxObserver.with_args(reduce_range=True),
                                                   weight=default_per_channel_weight_observer))
    example = (calib[:1],)
    prepared = prepare_fx(model, qmap, example)
    with torch.no_grad():
        for i in range(0, len(calib), 32):
            prepared(calib[i:i + 32])
    q = convert_fx(prepared)
    buf = io.BytesIO(); torch.save(q.state_dict(), buf)
    fbuf = io.BytesIO(); torch.save(model.state_dict(), fbuf)
    shape = list(x.shape[1:])
    for label, m in [("float32", model), ("int8", q)]:
        acc = accuracy(m, x, y)
        row = {"bench": "torch_int8", "model": name, "variant": label, "accuracy": round(acc, 4),
               "bytes": len(buf.getvalue()) if label == "int8" else len(fbuf.getvalue())}
        for bs in (1, 64):
            inp = torch.randn([bs] + shape)
            with torch.no_grad():
                row[f"ms_bs{bs}"] = round(median_ms(lambda: m(inp), a.reps), 2)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
