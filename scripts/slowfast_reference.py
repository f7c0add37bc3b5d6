#!/usr/bin/env python3
"""SlowFast written with torch.nn from the spec (section 3), PySlowFast's parameter names, for
checking the Rust model's forward pass.

    slowfast_reference.py CONFIG.json WEIGHTS.safetensors INPUTS.safetensors OUT.safetensors

CONFIG holds the `model` section; INPUTS holds `slow` and `fast`; OUT receives `logits`
(eval mode: BN running statistics, no dropout).
"""
import json
import sys

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file


class Block(nn.Module):
    def __init__(self, cin, cout, inner, kt, stride, bottleneck):
        super().__init__()
        self.has_branch1 = cin != cout or stride != 1
        if self.has_branch1:
            self.branch1 = nn.Conv3d(cin, cout, 1, stride=(1, stride, stride), bias=False)
            self.branch1_bn = nn.BatchNorm3d(cout)
        b = nn.Module()
        if bottleneck:
            b.a = nn.Conv3d(cin, inner, (kt, 1, 1), padding=(kt // 2, 0, 0), bias=False)
            b.a_bn = nn.BatchNorm3d(inner)
            b.b = nn.Conv3d(inner, inner, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False)
            b.b_bn = nn.BatchNorm3d(inner)
            b.c = nn.Conv3d(inner, cout, 1, bias=False)
            b.c_bn = nn.BatchNorm3d(cout)
            self.names = ["a", "b", "c"]
        else:
            b.a = nn.Conv3d(cin, cout, (kt, 3, 3), stride=(1, stride, stride), padding=(kt // 2, 1, 1), bias=False)
            b.a_bn = nn.BatchNorm3d(cout)
            b.b = nn.Conv3d(cout, cout, (1, 3, 3), padding=(0, 1, 1), bias=False)
            b.b_bn = nn.BatchNorm3d(cout)
            self.names = ["a", "b"]
        self.branch2 = b

    def forward(self, x):
        short = self.branch1_bn(self.branch1(x)) if self.has_branch1 else x
        y = x
        for i, n in enumerate(self.names):
            y = getattr(self.branch2, n + "_bn")(getattr(self.branch2, n)(y))
            if i < len(self.names) - 1:
                y = torch.relu(y)
        return torch.relu(short + y)


class Fuse(nn.Module):
    def __init__(self, fast, ratio, k, alpha):
        super().__init__()
        self.conv_f2s = nn.Conv3d(fast, fast * ratio, (k, 1, 1), stride=(alpha, 1, 1), padding=(k // 2, 0, 0), bias=False)
        self.bn = nn.BatchNorm3d(fast * ratio)

    def forward(self, slow, fast):
        return torch.cat([slow, torch.relu(self.bn(self.conv_f2s(fast)))], 1)


class Stem(nn.Module):
    def __init__(self, cout, k):
        super().__init__()
        self.conv = nn.Conv3d(3, cout, (k, 7, 7), stride=(1, 2, 2), padding=(k // 2, 3, 3), bias=False)
        self.bn = nn.BatchNorm3d(cout)

    def forward(self, x):
        return nn.functional.max_pool3d(torch.relu(self.bn(self.conv(x))), (1, 3, 3), (1, 2, 2), (0, 1, 1))


class SlowFast(nn.Module):
    def __init__(self, m):
        super().__init__()
        w, beta, ratio, alpha, kf = m["width_per_group"], m["beta_inv"], m["fusion_conv_channel_ratio"], m["alpha"], m["fusion_kernel_sz"]
        blocks = {18: [2, 2, 2, 2], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}[m["depth"]]
        bottleneck = m["depth"] != 18
        kt = [[1, 1, 3, 3], [3, 3, 3, 3]]
        s1 = nn.Module()
        s1.pathway0_stem = Stem(w, 1)
        s1.pathway1_stem = Stem(w // beta, 5)
        self.s1 = s1
        self.s1_fuse = Fuse(w // beta, ratio, kf, alpha)
        slow_in, fast_in = w + w // beta * ratio, w // beta
        self.stage_names = []
        for i, n in enumerate(blocks):
            out, inner, stride = w * 4 * 2 ** i, w * 2 ** i, 1 if i == 0 else 2
            st = nn.Module()
            for pw, (cin, cout, inn) in enumerate([(slow_in, out, inner), (fast_in, out // beta, inner // beta)]):
                for b in range(n):
                    setattr(st, f"pathway{pw}_res{b}", Block(cin if b == 0 else cout, cout, inn, kt[pw][i], stride if b == 0 else 1, bottleneck))
            setattr(self, f"s{i + 2}", st)
            if i < 3:
                setattr(self, f"s{i + 2}_fuse", Fuse(out // beta, ratio, kf, alpha))
            slow_in, fast_in = out + out // beta * ratio, out // beta
            self.stage_names.append((f"s{i + 2}", n))
        last = w * 4 * 8
        head = nn.Module()
        head.projection = nn.Linear(last + last // beta, m["num_classes"])
        self.head = head

    def forward(self, slow, fast):
        x = [self.s1.pathway0_stem(slow), self.s1.pathway1_stem(fast)]
        x[0] = self.s1_fuse(x[0], x[1])
        for i, (name, n) in enumerate(self.stage_names):
            st = getattr(self, name)
            for pw in range(2):
                for b in range(n):
                    x[pw] = getattr(st, f"pathway{pw}_res{b}")(x[pw])
            if i < 3:
                x[0] = getattr(self, f"{name}_fuse")(x[0], x[1])
        feat = torch.cat([nn.functional.adaptive_avg_pool3d(t, 1).flatten(1) for t in x], 1)
        return self.head.projection(feat)


def main():
    cfg, weights, inputs, out = sys.argv[1:5]
    m = json.load(open(cfg))["model"]
    model = SlowFast(m).eval()
    state = load_file(weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # BN's num_batches_tracked is the only key PyTorch has that the Rust model does not keep.
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        sys.exit(f"names differ: missing {missing[:5]} unexpected {unexpected[:5]}")
    x = load_file(inputs)
    with torch.no_grad():
        logits = model(x["slow"], x["fast"])
    save_file({"logits": logits.contiguous()}, out)


if __name__ == "__main__":
    main()
