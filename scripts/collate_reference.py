#!/usr/bin/env python3
"""PyTorch's float pipeline for batch collation, the reference the Rust collator is held to.

    collate_reference.py check SPEC.json OUT.f32   # one batch from explicit parameters
    collate_reference.py bench  SPEC.json          # clips/s of the same work, as JSON

Per clip: gather frames at trunc(linspace(start, start + T*stride - 1, T)) clamped to the clip,
F.interpolate(bilinear, align_corners=False) to the resized size (short side = short_side,
long side floored as PySlowFast does), crop, flip, (x / 255 - mean) / std; then stack to
[N, 3, T, S, S].
"""
import json
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def resized_size(h, w, short):
    if (w <= h and w == short) or (h <= w and h == short):
        return h, w
    if w < h:
        return int(math.floor(float(h) / w * short)), short
    return short, int(math.floor(float(w) / h * short))


def load(spec_path):
    spec = json.load(open(spec_path))
    raw = np.fromfile(spec["frames_file"], dtype=np.uint8)
    clips = []
    for c in spec["clips"]:
        n, h, w = c["num_frames"], c["height"], c["width"]
        frames = torch.from_numpy(raw[c["offset"]:c["offset"] + n * h * w * 3].reshape(n, h, w, 3))
        clips.append((frames, c))
    return spec, clips


def collate(spec, clips):
    t, s = spec["num_frames"], spec["crop_size"]
    mean = torch.tensor(spec["mean"]).view(3, 1, 1, 1)
    std = torch.tensor(spec["std"]).view(3, 1, 1, 1)
    out = []
    for frames, c in clips:
        n = frames.shape[0]
        idx = torch.linspace(c["start_frame"], c["start_frame"] + t * c["stride"] - 1, t)
        idx = torch.clamp(idx, 0, n - 1).long()
        x = frames[idx].permute(0, 3, 1, 2).float()  # T, 3, H, W
        rh, rw = resized_size(x.shape[2], x.shape[3], c["short_side"])
        x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False)
        x = x[:, :, c["crop_y"]:c["crop_y"] + s, c["crop_x"]:c["crop_x"] + s]
        if c["flip"]:
            x = x.flip(-1)
        x = x.permute(1, 0, 2, 3)  # 3, T, S, S
        out.append((x / 255.0 - mean) / std)
    return torch.stack(out)


def main():
    mode, spec_path = sys.argv[1], sys.argv[2]
    spec, clips = load(spec_path)
    if mode == "check":
        collate(spec, clips).contiguous().numpy().astype(np.float32).tofile(sys.argv[3])
    elif mode == "bench":
        threads = spec.get("threads")
        if threads:
            torch.set_num_threads(threads)
        collate(spec, clips)  # warm-up
        reps, start = 0, time.perf_counter()
        while reps < spec.get("min_reps", 3) or time.perf_counter() - start < spec.get("min_seconds", 2.0):
            collate(spec, clips)
            reps += 1
        elapsed = time.perf_counter() - start
        print(json.dumps({"clips_per_s": reps * len(clips) / elapsed, "threads": torch.get_num_threads()}))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
