#!/usr/bin/env python3
"""Training-step time of the same SlowFast in PyTorch (scripts/slowfast_reference.py's model),
for `multigrid bench step`: SGD (momentum 0.9, Nesterov, weight decay 1e-4) on random input.

    step_reference.py '{"model": {...}, "batch": 8, "frames": 32, "crop": 224, "alpha": 4,
                        "device": "cpu", "steps": 5, "autocast": false,
                        "channels_last": false}'

Prints {"seconds_per_step": ...} as JSON.
"""
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from slowfast_reference import SlowFast  # noqa: E402


def main():
    a = json.loads(sys.argv[1])
    dev = torch.device(a["device"])
    torch.manual_seed(0)
    model = SlowFast(a["model"]).to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
    n, t, s, alpha = a["batch"], a["frames"], a["crop"], a["alpha"]
    slow = torch.randn(n, 3, t // alpha, s, s, device=dev)
    fast = torch.randn(n, 3, t, s, s, device=dev)
    labels = torch.randint(0, a["model"]["num_classes"], (n,), device=dev)
    if a.get("channels_last", False):
        fmt = torch.channels_last_3d
        model = model.to(memory_format=fmt)
        slow, fast = slow.contiguous(memory_format=fmt), fast.contiguous(memory_format=fmt)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.get("autocast", False)):
            loss = torch.nn.functional.cross_entropy(model(slow, fast), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(a["steps"]):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    print(json.dumps({"seconds_per_step": (time.perf_counter() - start) / a["steps"]}))


if __name__ == "__main__":
    main()
