#!/usr/bin/env python3
"""A PyTorch training loop driven by the multigrid plan and the library's collation: the shape,
LR and dataset indices of every step come from the plan, the batch from Dataset.load_step, and
the model is PyTorch's own (a small 3D CNN here; any nn.Module taking [N, 3, T, S, S] works).

    train_torch.py DATA_DIR [--steps N]     (DATA_DIR from `multigrid gen-data --store`)

BN groups: the plan's `bn_groups` says over how many sub-batches BN statistics would be taken;
this plain model ignores it (PySlowFast's SubBatchNorm3d would take it).
"""
import argparse
import json
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bindings", "python"))
import multigrid as mg  # noqa: E402

CONFIG = {
    "data": {"num_frames": 8, "sampling_rate": 1, "train_jitter_scales": [34, 40],
             "train_crop_size": 32, "test_crop_size": 32, "random_flip": False},
    "train": {"batch_size": 4},
    "solver": {"base_lr": 0.05, "lr_policy": "steps_with_relative_lrs", "lrs": [1, 0.1],
               "steps": [0, 2], "max_epoch": 3},
    "multigrid": {"long_cycle": True, "short_cycle": True,
                  "long_cycle_factors": [[0.5, 0.7071], [1, 1]]},
}


def model(num_classes):
    def block(cin, cout):
        return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout),
                             nn.ReLU(inplace=True), nn.MaxPool3d((1, 2, 2)))
    # Adaptive pooling makes the head independent of the plan's changing T and S.
    return nn.Sequential(block(3, 16), block(16, 32), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                         nn.Linear(32, num_classes))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: all)")
    a = ap.parse_args()
    torch.manual_seed(0)
    net = model(12)
    opt = torch.optim.SGD(net.parameters(), lr=0.0, momentum=0.9, nesterov=True, weight_decay=1e-4)
    with mg.Schedule(CONFIG) as schedule, \
            mg.Dataset.store(os.path.join(a.data, "train.mgstore")) as data, \
            mg.Plan(schedule, len(data), seed=0) as plan:
        total = plan.total_steps if a.steps == 0 else min(a.steps, plan.total_steps)
        print(f"{schedule.num_stages} stages, {plan.total_steps} steps; running {total}")
        for k in range(total):
            _, fast, labels, step = data.load_step(plan, k, alpha=0)  # one pathway
            for g in opt.param_groups:
                g["lr"] = step["lr"]
            loss = nn.functional.cross_entropy(net(torch.from_numpy(fast)), torch.from_numpy(labels))
            opt.zero_grad()
            loss.backward()
            opt.step()
            print(json.dumps({"step": k, "shape": [step["batch_size"], step["num_frames"], step["crop_size"]],
                              "lr": round(step["lr"], 6), "loss": round(loss.item(), 4)}))


if __name__ == "__main__":
    main()
