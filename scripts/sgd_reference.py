"""torch.optim.SGD on the parameters and gradients tests/optim.rs wrote: the reference our SGD
must equal. Parameter groups as PySlowFast's optimizer.construct_optimizer builds them: BN
parameters without weight decay, the rest with SOLVER.WEIGHT_DECAY.

    python scripts/sgd_reference.py IN.safetensors CONFIG.json OUT.safetensors

CONFIG may set "foreach" (default false): PyTorch's multi-tensor implementation instead of its
per-parameter loop. IN holds `param.NAME` (initial values), `grad.K.NAME` (the gradient of step K) and `lrs` (one
LR per step); OUT receives the parameters after every step, `param.NAME`.
"""
import json
import sys

import torch
from safetensors.torch import load_file, save_file


def is_bn(name):
    parts = name.split(".")
    return len(parts) > 1 and (parts[-2] == "bn" or parts[-2].endswith("_bn"))


def main():
    inputs = load_file(sys.argv[1])
    cfg = json.load(open(sys.argv[2]))
    names = sorted(k[len("param."):] for k in inputs if k.startswith("param."))
    params = {n: torch.nn.Parameter(inputs["param." + n].clone()) for n in names}
    groups = [
        {"params": [params[n] for n in names if is_bn(n)], "weight_decay": 0.0},
        {"params": [params[n] for n in names if not is_bn(n)], "weight_decay": cfg["weight_decay"]},
    ]
    opt = torch.optim.SGD(
        groups,
        lr=1.0,
        momentum=cfg["momentum"],
        dampening=cfg["dampening"],
        nesterov=cfg["nesterov"],
        foreach=cfg.get("foreach", False),
    )
    lrs = inputs["lrs"].tolist()
    for k, lr in enumerate(lrs):
        for g in opt.param_groups:
            g["lr"] = lr
        for n in names:
            params[n].grad = inputs[f"grad.{k}.{n}"].clone()
        opt.step()
    save_file({"param." + n: params[n].detach().contiguous() for n in names}, sys.argv[3])


if __name__ == "__main__":
    main()
