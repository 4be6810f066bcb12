#!/usr/bin/env python3
"""PyTorch figures for the same work as `swiftai bench` (reference tooling only; needs torch).

Usage: pytorch_bench.py gemm|conv|step|tvstep|infer|ort [--threads 2] [--bs 1024] [--channels-last] [--arch resnet34 --size 224]
       [--precision fp32|bf16]  (step, tvstep: bf16 = torch.autocast("cpu", torch.bfloat16))
Prints one JSON line per figure, same keys as swiftai bench plus "framework".
"""
import argparse, contextlib, json, os, resource, sys, time
import torch
import torch.nn.functional as F

def median(fn, reps, warmup=2):
    for _ in range(warmup): fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what"); ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bs", type=int, default=1024); ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--model", default="resnet")
    ap.add_argument("--arch", default="resnet34"); ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--onnx", help="ort: run this ONNX file (e.g. `swiftai export --onnx`) instead of torchvision's export")
    a = ap.parse_args()
    torch.set_num_threads(a.threads); torch.manual_seed(0)
    fw = f"pytorch {torch.__version__}"
    cast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if a.precision == "bf16" else contextlib.nullcontext
    peak_mb = lambda: round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    mf = torch.channels_last if a.channels_last else torch.contiguous_format
    if a.what == "gemm":
        for n in [256, 512, 1024, 2048]:
            x, y = torch.randn(n, n), torch.randn(n, n)
            t = median(lambda: x @ y, a.reps)
            print(json.dumps({"bench": "gemm", "n": n, "gflops": round(2 * n ** 3 / t / 1e9, 1), "framework": fw}))
    elif a.what == "conv":
        for (n, c, h, oc, k, s, p) in [(1024, 16, 14, 32, 3, 2, 1), (256, 64, 7, 64, 3, 1, 1)]:
            x = torch.randn(n, c, h, h).to(memory_format=mf); w = torch.randn(oc, c, k, k) * 0.1
            y = F.conv2d(x, w, stride=s, padding=p); oh = y.shape[2]
            dy = torch.randn_like(y).to(memory_format=mf)
            flops = 2 * n * oc * oh * oh * c * k * k
            shape = f"{n}x{c}x{h}x{h}->{oc},k{k},s{s},p{p}"
            passes = [("forward", lambda: F.conv2d(x, w, stride=s, padding=p)),
                      ("backward_data", lambda: torch.nn.grad.conv2d_input(x.shape, w, dy, stride=s, padding=p)),
                      ("backward_weights", lambda: torch.nn.grad.conv2d_weight(x, w.shape, dy, stride=s, padding=p))]
            for name, fn in passes:
                t = median(fn, a.reps)
                print(json.dumps({"bench": "conv", "shape": shape, "pass": name, "gflops": round(flops / t / 1e9, 1),
                                  "framework": fw, "memory_format": "channels_last" if a.channels_last else "nchw"}))
    elif a.what == "step":
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "reference"))
        import pytorch_fmnist as P
        m = P.get_model(a.model).to(memory_format=mf); m.train()
        x = torch.randn(a.bs, 1, 28, 28); yb = torch.randint(0, 10, (a.bs,))
        def step():
            with cast(): loss = F.cross_entropy(m(x), yb)
            loss.backward()
            for q in m.parameters(): q.grad = None
        t = median(step, a.reps)
        print(json.dumps({"bench": "step", "model": a.model, "bs": a.bs, "precision": a.precision, "ms": round(t * 1e3, 1),
                          "images_per_s": round(a.bs / t, 1), "peak_rss_mb": peak_mb(), "framework": fw}))
    elif a.what == "tvstep":  # as `swiftai bench step --arch resnet34`: forward, backward, AdamW step, channels-last
        import torchvision
        m = getattr(torchvision.models, a.arch)(num_classes=10).to(memory_format=torch.channels_last); m.train()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        x = torch.randn(a.bs, 3, a.size, a.size).to(memory_format=torch.channels_last); yb = torch.randint(0, 10, (a.bs,))
        def step():
            with cast(): loss = F.cross_entropy(m(x), yb)
            loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        t = median(step, a.reps)
        print(json.dumps({"bench": "step", "model": a.arch, "bs": a.bs, "precision": a.precision, "ms": round(t * 1e3, 1),
                          "images_per_s": round(a.bs / t, 1), "peak_rss_mb": peak_mb(), "framework": fw}))
    elif a.what == "infer":
        import torchvision
        m = getattr(torchvision.models, a.arch)().eval().to(memory_format=mf)
        x = torch.randn(a.bs, 3, a.size, a.size).to(memory_format=mf)
        with torch.no_grad(): t = median(lambda: m(x), a.reps)
        print(json.dumps({"bench": "infer", "model": a.arch, "bs": a.bs, "ms": round(t * 1e3, 2),
                          "images_per_s": round(a.bs / t, 1), "framework": fw}))
    elif a.what == "ort":  # the same torchvision model exported to ONNX, run by onnxruntime on a.threads threads
        import tempfile, torchvision, onnxruntime as ort
        path = a.onnx
        if path is None:
            m = getattr(torchvision.models, a.arch)().eval()
            path = os.path.join(tempfile.mkdtemp(), a.arch + ".onnx")
            torch.onnx.export(m, torch.randn(a.bs, 3, a.size, a.size), path, input_names=["x"], dynamo=False)
        so = ort.SessionOptions(); so.intra_op_num_threads = a.threads; so.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        xn = torch.randn([a.bs] + [d if isinstance(d, int) else a.size for d in inp.shape[1:]]).numpy()
        t = median(lambda: sess.run(None, {inp.name: xn}), a.reps)
        print(json.dumps({"bench": "infer", "model": a.onnx or a.arch, "bs": a.bs, "ms": round(t * 1e3, 2),
                          "images_per_s": round(a.bs / t, 1), "framework": f"onnxruntime {ort.__version__}"}))
    else:
        sys.exit(f"unknown benchmark {a.what}")

if __name__ == "__main__":
    main()
