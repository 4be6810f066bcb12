#!/usr/bin/env python3
"""Writes Tests/SwiftAINNTests/Fixtures/tv_basic.safetensors: torchvision 0.24.1 ResNet references small enough to commit.

Run with the reference venv: /work/venv/bin/python scripts/make_resnet_fixtures.py

  basic_net.input / .output   ResNet(BasicBlock, [1,1,1,1], num_classes=10) in eval mode on a 2x3x32x32 input. Its
                              4.9M weights are not stored: every state-dict entry is a hash of its position (see
                              `formula_state`), which the Swift test recomputes.
  basic_block.*, bottleneck_block.*
                              one BasicBlock(8, 16, stride=2) and one Bottleneck(16, 8, stride=2, groups=2, base_width=40)
                              (width int(8*40/64)*2 = 10), each with a 1x1-conv+BN downsample and randomised BN:
                              ".param.<key>" (state dict), ".input", ".eval_output"; then one training-mode step:
                              ".train_output", ".upstream" (loss = sum(out * upstream)), ".grad.<param>", ".grad_input",
                              ".after.<buffer>" (running statistics after the step).
Metadata: "<arch>.parameters" / "<arch>.buffers" (JSON [[name, shape], ...] in torchvision's named_parameters /
named_buffers order) for resnet18 and resnet50, and "parameter_counts" (JSON) for resnet18..152 and resnext50_32x4d.
"""
import json, os
import numpy as np
import torch, torchvision
from torch import nn
from torchvision.models.resnet import ResNet, BasicBlock, Bottleneck
from safetensors.torch import save_file

torch.manual_seed(0); torch.set_num_threads(1)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "SwiftAINNTests", "Fixtures")
tensors, meta = {}, {}


def formula_state(model):
    """Entry j (state-dict keys sorted) element i: v = hash(i, j) / 2^31 - 1, uniform in [-1, 1), with the 32-bit
    hash h = i*0x9E3779B1 + j*0x85EBCA77; h ^= h>>15; h *= 0x2C1B3C6D; h ^= h>>12; h *= 0x297A2D39; h ^= h>>15
    (all mod 2^32); then scaled by kind in float64 and rounded to float32: conv/fc weight v*sqrt(3/fan_in), BN weight
    and running_var 1+0.5v, BN bias, running_mean and fc bias 0.1v; num_batches_tracked stays 0."""
    sd = model.state_dict()
    for j, k in enumerate(sorted(sd)):
        t = sd[k]
        if k.endswith("num_batches_tracked"):
            continue
        M = np.uint64(0xFFFFFFFF)
        h = (np.arange(t.numel(), dtype=np.uint64) * np.uint64(0x9E3779B1) + np.uint64(j * 0x85EBCA77)) & M
        h ^= h >> np.uint64(15); h = (h * np.uint64(0x2C1B3C6D)) & M
        h ^= h >> np.uint64(12); h = (h * np.uint64(0x297A2D39)) & M
        h ^= h >> np.uint64(15)
        v = h.astype(np.float64) / 2**31 - 1
        if t.dim() >= 2:
            v = v * np.sqrt(3.0 / (t.numel() // t.shape[0]))
        elif k.endswith("running_var") or (k.endswith("weight") and not k.startswith("fc")):
            v = 1 + 0.5 * v
        else:
            v = 0.1 * v
        t.copy_(torch.from_numpy(v.astype(np.float32)).reshape(t.shape))


def randomise_bn(m):
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.1); mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.uniform_(0.5, 1.5); mod.bias.data.normal_(0, 0.1)


net = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10)
formula_state(net); net.eval()
x = torch.randn(2, 3, 32, 32)
with torch.no_grad():
    tensors["basic_net.input"], tensors["basic_net.output"] = x, net(x)

blocks = {
    "basic_block": (BasicBlock(8, 16, stride=2, downsample=nn.Sequential(nn.Conv2d(8, 16, 1, 2, bias=False), nn.BatchNorm2d(16))),
                    (4, 8, 9, 9)),
    "bottleneck_block": (Bottleneck(16, 8, stride=2, groups=2, base_width=40,
                                    downsample=nn.Sequential(nn.Conv2d(16, 32, 1, 2, bias=False), nn.BatchNorm2d(32))),
                         (3, 16, 9, 9)),
}
for name, (block, shape) in blocks.items():
    randomise_bn(block)
    for k, v in block.state_dict().items():
        tensors[f"{name}.param.{k}"] = v.detach().clone().contiguous()
    x = torch.randn(*shape)
    block.eval()
    with torch.no_grad():
        tensors[f"{name}.eval_output"] = block(x)
    block.train()
    xg = x.clone().requires_grad_()
    out = block(xg)
    up = torch.randn_like(out)
    (out * up).sum().backward()
    tensors[f"{name}.input"], tensors[f"{name}.train_output"], tensors[f"{name}.upstream"] = x, out.detach(), up
    tensors[f"{name}.grad_input"] = xg.grad
    for k, p in block.named_parameters():
        tensors[f"{name}.grad.{k}"] = p.grad.clone()
    for k, b in block.named_buffers():
        tensors[f"{name}.after.{k}"] = b.clone()

for arch in ["resnet18", "resnet50"]:
    m = getattr(torchvision.models, arch)()
    meta[f"{arch}.parameters"] = json.dumps([[k, list(p.shape)] for k, p in m.named_parameters()])
    meta[f"{arch}.buffers"] = json.dumps([[k, list(b.shape)] for k, b in m.named_buffers()])
meta["parameter_counts"] = json.dumps({a: sum(p.numel() for p in getattr(torchvision.models, a)().parameters()) for a in
                                       ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d"]})
os.makedirs(OUT, exist_ok=True)
path = os.path.join(OUT, "tv_basic.safetensors")
save_file(tensors, path, metadata=meta)
print(path, os.path.getsize(path), json.loads(meta["parameter_counts"]))
