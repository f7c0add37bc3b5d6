"""torch.optim.SGD on the parameters and gradients tests/optim.rs wrote: the reference our SGD
must equal. Parameter groups as PySlowFast's optimizer.construct_optimizer builds them: BN
parameters without weight decay, the rest with SOLVER.WEIGHT_DECAY.

    python scripts/sgd_reference.py IN.safetensors CONFIG.json OUT.safetensors
    python scripts/sgd_reference.py --time CONFIG.json

CONFIG may set "foreach" (default false): PyTorch's multi-tensor implementation instead of its
per-parameter loop; "fused": its fused kernel (CUDA); "device" (default "cpu"): where the
parameters and gradients live. With --time, CONFIG also lists "shapes" ([name, shape] pairs)
and "steps": the seconds of one update of such parameters, printed as
{"seconds_per_update": ...}. IN holds `param.NAME` (initial values), `grad.K.NAME` (the gradient of step K) and `lrs` (one
LR per step); OUT receives the parameters after every step, `param.NAME`.
"""
import json
import sys

import torch
from safetensors.torch import load_file, save_file


def is_bn(name):
    parts = name.split(".")
    return len(parts) > 1 and (parts[-2] == "bn" or parts[-2].endswith("_bn"))


def groups_of(params, names, weight_decay):
    return [
        {"params": [params[n] for n in names if is_bn(n)], "weight_decay": 0.0},
        {"params": [params[n] for n in names if not is_bn(n)], "weight_decay": weight_decay},
    ]


def optimizer(groups, cfg):
    return torch.optim.SGD(
        groups,
        lr=1.0,
        momentum=cfg["momentum"],
        dampening=cfg["dampening"],
        nesterov=cfg["nesterov"],
        foreach=cfg.get("foreach", False) and not cfg.get("fused", False),
        fused=cfg.get("fused", False) or None,
    )


def time_updates(cfg):
    import time
    dev = torch.device(cfg.get("device", "cpu"))
    torch.manual_seed(0)
    shapes = dict((n, s) for n, s in cfg["shapes"])
    names = sorted(shapes)
    params = {n: torch.nn.Parameter(torch.randn(shapes[n], device=dev)) for n in names}
    for p in params.values():
        p.grad = torch.randn_like(p)
    opt = optimizer(groups_of(params, names, cfg["weight_decay"]), cfg)
    for g in opt.param_groups:
        g["lr"] = 1e-6
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(2):
        opt.step()
    sync()
    start = time.perf_counter()
    for _ in range(cfg["steps"]):
        opt.step()
    sync()
    print(json.dumps({"seconds_per_update": (time.perf_counter() - start) / cfg["steps"]}))


def main():
    if sys.argv[1] == "--time":
        time_updates(json.load(open(sys.argv[2])))
        return
    inputs = load_file(sys.argv[1])
    cfg = json.load(open(sys.argv[2]))
    dev = torch.device(cfg.get("device", "cpu"))
    names = sorted(k[len("param."):] for k in inputs if k.startswith("param."))
    params = {n: torch.nn.Parameter(inputs["param." + n].clone().to(dev)) for n in names}
    opt = optimizer(groups_of(params, names, cfg["weight_decay"]), cfg)
    lrs = inputs["lrs"].tolist()
    for k, lr in enumerate(lrs):
        for g in opt.param_groups:
            g["lr"] = lr
        for n in names:
            params[n].grad = inputs[f"grad.{k}.{n}"].clone().to(dev)
        opt.step()
    save_file({"param." + n: params[n].detach().cpu().contiguous() for n in names}, sys.argv[3])


if __name__ == "__main__":
    main()
