"""PyTorch (x86/fbgemm) values for SwiftAI's int8 tests: observer parameters, per-channel weights, a quantized conv.

Run with the reference venv: python scripts/make_quant_fixtures.py Tests/SwiftAINNTests/Fixtures/quant.safetensors
"""
import sys
import torch
from safetensors.torch import save_file
from torch.ao.quantization.observer import MinMaxObserver, HistogramObserver, PerChannelMinMaxObserver

torch.manual_seed(0)
out = {}
# Activations: a skewed distribution with outliers, observed in 3 batches.
batches = [torch.randn(4, 8, 6, 6) * 0.7 + 0.3 for _ in range(3)]
batches[1][0, 0, 0, 0] = 9.0  # an outlier the histogram observer clips
for i, b in enumerate(batches):
    out[f"act_{i}"] = b
for name, obs in [("minmax", MinMaxObserver(reduce_range=True)), ("histogram", HistogramObserver(reduce_range=True))]:
    for b in batches:
        obs(b)
    s, z = obs.calculate_qparams()
    out[f"{name}_scale"] = s.reshape(1).float()
    out[f"{name}_zero_point"] = z.reshape(1).long()
    out[f"{name}_range"] = torch.tensor([obs.min_val.item(), obs.max_val.item()])
# Per-channel symmetric int8 weights.
w = torch.randn(16, 8, 3, 3) * 0.2
w[3] *= 0.01
wo = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
wo(w)
ws, wz = wo.calculate_qparams()
wq = torch.quantize_per_channel(w, ws.float(), wz, 0, torch.qint8)
out["weight"] = w
out["weight_scale"] = ws.float()
out["weight_int"] = wq.int_repr().to(torch.int8)
# A quantized conv + ReLU (fbgemm) on the min-max quantized activations, output at a fixed quantization.
torch.backends.quantized.engine = "x86"
x = batches[0]
xs, xz = out["minmax_scale"].item(), int(out["minmax_zero_point"].item())
xq = torch.quantize_per_tensor(x, xs, xz, torch.quint8)
bias = torch.randn(16) * 0.1
conv = torch.ao.nn.intrinsic.quantized.ConvReLU2d(8, 16, 3, stride=2, padding=1)
conv.set_weight_bias(wq, bias)
conv.scale, conv.zero_point = 0.02, 0
y = conv(xq)
out["x_int"] = xq.int_repr().to(torch.uint8)
out["bias"] = bias
out["conv_relu_int"] = y.int_repr().to(torch.uint8)
out["conv_out_scale"] = torch.tensor([0.02])
save_file({k: v.contiguous() for k, v in out.items()}, sys.argv[1])
print({k: (tuple(v.shape), v.dtype) for k, v in out.items()})
print("minmax", out["minmax_scale"], out["minmax_zero_point"], "hist", out["histogram_scale"], out["histogram_zero_point"], out["histogram_range"])
