#!/usr/bin/env python3
"""The lesson's recipe (../shared/reference/pytorch_fmnist.py, same arguments) with the model's forward under
torch.autocast("cpu", torch.bfloat16): PyTorch's mixed precision, beside `swiftai train --precision bf16`."""
import os, sys
import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "reference"))
import pytorch_fmnist as P

class Autocast(nn.Module):
    def __init__(self, m):
        super().__init__(); self.m = m
    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.m(x).float()

make = P.get_model
P.get_model = lambda kind: Autocast(make(kind))
if __name__ == "__main__":
    P.main()
