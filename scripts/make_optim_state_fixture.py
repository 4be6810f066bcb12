#!/usr/bin/env python3
"""Writes Tests/SwiftAIOptimTests/Fixtures/torch_optim_state_layout.json: the layout of torch.optim state dicts.

Run with the reference venv: /work/refvenv/bin/python scripts/make_optim_state_fixture.py

For AdamW (one group, and two: weight, then bias without weight decay), SGD with momentum and RMSprop with
momentum, each over the two parameters of nn.Linear(3, 2) (weight
[2, 3], bias [2]) after two steps: "state" maps each parameter index to {name: shape} (the step's shape is []), and
"param_groups" is the state dict's list as JSON (tuples as lists). The Swift test builds the same optimizers and
checks that SwiftAI's state dict uses the same indices, names, shapes and hyper-parameter keys and values.
"""
import json, os
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "SwiftAIOptimTests", "Fixtures",
                   "torch_optim_state_layout.json")

OPTIMIZERS = {
    "AdamW": lambda p: torch.optim.AdamW(p, lr=0.01, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.1),
    "SGD": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01, nesterov=False),
    "RMSProp": lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-6, weight_decay=0.01, momentum=0.5),
    # Two groups (weight, then bias with no weight decay): indices run on over the groups.
    "AdamW_two_groups": lambda p: torch.optim.AdamW(
        [{"params": [w]} if w.dim() == 2 else {"params": [w], "weight_decay": 0} for w in p],
        lr=0.01, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.1),
}


def layout(make):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = make(model.parameters())
    for _ in range(2):
        model(torch.ones(4, 3)).square().sum().backward()
        opt.step()
        opt.zero_grad()
    sd = opt.state_dict()
    state = {str(i): {name: list(t.shape) for name, t in entry.items()} for i, entry in sd["state"].items()}
    return {"state": state, "param_groups": sd["param_groups"]}


def main():
    out = {"torch": torch.__version__, **{name: layout(make) for name, make in OPTIMIZERS.items()}}
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
