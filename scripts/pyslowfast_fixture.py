#!/usr/bin/env python3
"""Writes tests/fixtures/pyslowfast/: PySlowFast's own SlowFast (facebookresearch/SlowFast) run on
seeded weights and inputs, so tests/pyslowfast.rs can check the Rust model against it without
Python. Only numbers are written; no PySlowFast code is copied.

    pyslowfast_fixture.py SLOWFAST_DIR OUT_DIR [SLOWFAST_COMMIT]
    pyslowfast_fixture.py frames SLOWFAST_DIR OUT_DIR [SLOWFAST_COMMIT]
    pyslowfast_fixture.py config SLOWFAST_DIR OUT_DIR DEFAULTS_JSON [SLOWFAST_COMMIT]
    pyslowfast_fixture.py resnet SLOWFAST_DIR OUT_DIR [SLOWFAST_COMMIT]

    pyslowfast_fixture.py resume SLOWFAST_DIR OUTPUT_DIR

`resume` (tests/checkpoint_io.rs) writes nothing: it resumes from the newest .pyth under
OUTPUT_DIR/checkpoints as PySlowFast's tools/train_net.py does and prints what happened as
JSON; see resume_main.
`resnet` (PySlowFast's single-pathway ResNet: C2D, I3D-NL, Slow, Slow-NL; tests/pyslowfast.rs's
`resnet_*` tests) is described at resnet_main:

    /tmp/psf-venv/bin/python scripts/pyslowfast_fixture.py resnet /tmp/SlowFast \
        tests/fixtures/pyslowfast_resnet

`frames` (tests/frame_channels.rs's JPEG frames and what PySlowFast loads from them) and
`config` (PySlowFast's config defaults and loader, for src/schedule/pyslowfast/ and
tests/config_yaml.rs) are described at frames_main and config_main below; the run without a
mode writes the model fixtures described here. `frames` also needs OpenCV in the venv
(`--no-deps` keeps the project's numpy):

    /tmp/psf-venv/bin/pip install --no-deps opencv-python-headless
    /tmp/psf-venv/bin/python scripts/pyslowfast_fixture.py frames /tmp/SlowFast \
        tests/fixtures/pyslowfast_frames
    /tmp/psf-venv/bin/python scripts/pyslowfast_fixture.py config /tmp/SlowFast \
        tests/fixtures/pyslowfast_config src/schedule/pyslowfast/defaults.json

SLOWFAST_DIR is a work tree of github.com/facebookresearch/SlowFast (only `slowfast/` is needed);
its commit is read with `git -C SLOWFAST_DIR rev-parse HEAD` or taken from the third argument.

Python set-up (a throwaway venv; torch comes from the project's .venv, same libtorch as tch):

    .venv/bin/python -m venv /tmp/psf-venv
    echo "$PWD/.venv/lib/python3.11/site-packages" \
        > /tmp/psf-venv/lib/python3.11/site-packages/main-venv.pth
    /tmp/psf-venv/bin/pip install fvcore iopath simplejson psutil safetensors
    /tmp/psf-venv/bin/python scripts/pyslowfast_fixture.py /tmp/SlowFast tests/fixtures/pyslowfast

PySlowFast's optional dependencies that are not installed (pytorchvideo, detectron2, torchvision,
matplotlib) are replaced by stub modules whose members raise when used; `slowfast.datasets`
(video decoding: av, cv2, PIL, pandas) is stubbed too. None of them is on the path this script
runs: SlowFast with BatchNorm3d or SubBatchNorm3d, ResNetBasicHead, fvcore's precise BN.

Two networks, both MODEL.ARCH slowfast, MODEL.MODEL_NAME SlowFast, SLOWFAST.ALPHA 4,
FUSION_CONV_CHANNEL_RATIO 2, FUSION_KERNEL_SZ 7, NUM_CLASSES 10, DROPOUT_RATE 0, DATA.NUM_FRAMES 8,
TRAIN_CROP_SIZE 32 (so the head's fixed AvgPool3d covers the whole 2x1x1 / 8x1x1 last feature
maps: global pooling at that crop), MULTIGRID.SHORT_CYCLE off:
  d50  RESNET.DEPTH 50 (bottleneck), WIDTH_PER_GROUP 4, BETA_INV 4: weights and inputs stored
       (BETA_INV 8 needs width 8: 2.2 MB of weights);
  d18  RESNET.DEPTH 18 (basic_transform, NUM_BLOCK_TEMP_KERNEL 2 per stage), WIDTH_PER_GROUP 8,
       BETA_INV 8: 5.4 M parameters (PySlowFast's basic blocks are as wide as its bottlenecks'
       outputs), too large to store, so weights and input come from generated() (a counter
       hash, no RNG), which tests/pyslowfast.rs repeats bit for bit; only outputs are stored.

Files (float32 safetensors; BN names are PySlowFast checkpoint names, i.e. after
checkpoint.sub_to_normal_bn, which are the Rust model's names):

  weights.safetensors   d50's BatchNorm3d state_dict without the 110 `num_batches_tracked`
                        buffers (int64; the Rust model has none). Convs: PySlowFast's init
                        (c2_msra_fill) under torch.manual_seed(SEED); every BN's weight, bias and
                        running statistics randomised (statistics near a 32-clip batch's, then
                        perturbed); head.projection ~ N(0, 1/fan_in).
  inputs.safetensors    d50: `slow` [4,3,2,32,32], `fast` [4,3,8,32,32], the forward input;
                        `precise{j}_slow` [4,3,2,8,8], `precise{j}_fast` [4,3,8,8,8], j = 0,1,2,
                        the precise-BN batches.
  outputs.safetensors   d50, each also as `<key>_f64`: the same forward in float64 (rounded to
                        float32), a reference well inside float32's own error:
    eval_probs          [4,10] what PySlowFast's eval-mode forward returns (head softmax)
    eval_logits         head.projection's output before that softmax (a forward hook)
    eval_probs_wide     [2,10] eval on 2 clips of 32x64, `torch.cat([t[:2], t[2:]], dim=4)` of
                        slow and fast (derived, not stored): the fixed AvgPool3d (config.json
                        `head_pool_fixed`) leaves 1x2 positions, each scored with the softmax,
                        then averaged (PySlowFast's fully convolutional testing)
    train_logits        train mode, BatchNorm3d (batch statistics)
    train_logits_bn2    train mode, BN.NORM_TYPE sub_batchnorm, NUM_SPLITS 2 (SubBatchNorm3d;
                        clip i in split i mod 2; loaded with checkpoint.normal_to_sub_bn)
                        d18: `d18_eval_probs`, `d18_eval_logits`, `d18_train_logits`,
                        `d18_train_logits_bn2`, each also `_f64`; `d18_probe/<name>`: the first
                        8 generated values of one tensor per generated() rule;
                        `d18_eval_probs_40` [2,10]: eval on generated `input/slow40`
                        [2,3,2,40,40] and `input/fast40` [2,3,8,40,40] (odd feature maps; the
                        fixed head scores 2x2 positions); `d18_eval_logits_40`: the same input
                        through the MULTIGRID.SHORT_CYCLE model (adaptive, global pool), before
                        its softmax.
  bn_stats.safetensors  d50 running statistics from float64 runs (rounded to float32), keyed
                        `<set>/<bn>.running_mean|running_var`, <bn> a Rust BN name (e.g.
                        `s2.pathway1_res0.branch2.a_bn`), [C]; for SubBatchNorm3d the aggregated
                        `bn` statistics (`split_bn` ones are not stored). Sets:
    train_step          after the train_logits forward (momentum 0.1, from weights.safetensors)
    train_step_bn2      after the train_logits_bn2 forward, then misc.aggregate_sub_bn_stats
    precise             precise BN as tools/train_net.py does it: fvcore.nn.precise_bn
                        .update_bn_stats over the three precise batches in train mode, then
                        misc.aggregate_sub_bn_stats; BatchNorm3d
    precise_bn2         the same with SubBatchNorm3d, NUM_SPLITS 2
    precise_meanvar, precise_meanvar_bn2
                        the same two with fvcore's _MeanOfBatchVarianceEstimator (the mean of the
                        per-batch unbiased variances: what update_bn_stats did up to 2020, e.g.
                        fvcore 0.1.2.post20201122); fvcore 0.1.5.post20221221, PyPI's newest,
                        uses _PopulationVarianceEstimator (the biased variance of all batches'
                        values together)
  config.json           Rust ModelConfig (`model`, `d18.model`), the PySlowFast cfg keys set,
                        d18's state_dict names, shapes, seed, SlowFast commit, torch, fvcore.
"""

import copy
import json
import os
import subprocess
import sys
import types

SEED = 20240610
N = 4
FRAMES = 8
CROP = 32
PRECISE_CROP = 8
PRECISE_BATCHES = 3

# The Rust side: multigrid::schedule::ModelConfig.
OURS = {
    "depth": 50,
    "width_per_group": 4,
    "alpha": 4,
    "beta_inv": 4,
    "fusion_conv_channel_ratio": 2,
    "fusion_kernel_sz": 7,
    "num_classes": 10,
    "dropout_rate": 0.0,
    "zero_init_final_bn": True,
}

# The second network, depth 18 (basic blocks) at our default alpha / beta_inv / fusion, whose
# weights and input are too large to store: both come from `generated` below, which
# tests/pyslowfast.rs repeats bit for bit; only its outputs are stored.
OURS_D18 = dict(OURS, depth=18, width_per_group=8, beta_inv=8)


_INSTALLED = {}


def _unavailable(name):
    def fail(*_a, **_k):
        raise RuntimeError(f"{name} is a stub in pyslowfast_fixture.py")

    return type(name.rsplit(".", 1)[-1], (), {"__init__": fail})


def module(name, members=(), package=False, path=None):
    """Installs a stub module `name` (unless its top-level package is installed and not
    slowfast) whose members are classes that raise when called; `path` makes it a package
    whose submodules load from that directory without running its __init__."""
    import importlib.util

    top = name.split(".")[0]
    if top != "slowfast":
        if top not in _INSTALLED:
            _INSTALLED[top] = importlib.util.find_spec(top) is not None
        if _INSTALLED[top]:
            return
    m = types.ModuleType(name)
    if package or path:
        m.__path__ = [path] if path else []
    for member in members:
        setattr(m, member, _unavailable(f"{name}.{member}"))
    sys.modules[name] = m
    parent, _, child = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], child, m)


def stub_missing_modules():
    """sys.modules entries for PySlowFast imports that are not installed; every member is a class
    that raises when called, so a stub that is reached fails loudly."""
    module("pytorchvideo", package=True)
    module("pytorchvideo.layers", package=True)
    module("pytorchvideo.layers.batch_norm", ["NaiveSyncBatchNorm1d", "NaiveSyncBatchNorm3d"])
    module("pytorchvideo.layers.swish", ["Swish"])
    module(
        "pytorchvideo.layers.distributed",
        [
            "cat_all_gather",
            "get_local_process_group",
            "get_local_rank",
            "get_local_size",
            "get_world_size",
            "init_distributed_training",
        ],
    )
    module("pytorchvideo.losses", package=True)
    module("pytorchvideo.losses.soft_target_cross_entropy", ["SoftTargetCrossEntropyLoss"])
    module("detectron2", package=True)
    module("detectron2.layers", ["ROIAlign"])
    module("torchvision", package=True)
    module("torchvision.io")
    module("torchvision.utils", ["make_grid"])
    module("matplotlib", package=True)
    module("matplotlib.pyplot")
    # slowfast.utils.misc imports pack_pathway_output from the datasets package, whose
    # __init__ imports every dataset (av, cv2, PIL, pandas, torchvision transforms).
    import slowfast  # noqa: F401  (the real package, so the stub becomes its attribute)

    module("slowfast.datasets", package=True)
    module("slowfast.datasets.utils", ["pack_pathway_output"])


def set_keys(cfg, keys):
    """Sets PySlowFast cfg keys ("SECTION.KEY": value), each of which must exist."""
    for key, value in keys.items():
        node = cfg
        *path, leaf = key.split(".")
        for p in path:
            node = getattr(node, p)
        assert hasattr(node, leaf), key
        setattr(node, leaf, value)


def pyslowfast_cfg(get_cfg, norm_type, num_splits, ours=OURS, nonlocal_=None):
    """PySlowFast's cfg of the SlowFast `ours`; `nonlocal_`: NONLOCAL.* keys to set."""
    cfg = get_cfg()
    basic = ours["depth"] == 18
    keys = {
        "NUM_GPUS": 0,
        "MODEL.ARCH": "slowfast",
        "MODEL.MODEL_NAME": "SlowFast",
        "MODEL.NUM_CLASSES": ours["num_classes"],
        "MODEL.DROPOUT_RATE": ours["dropout_rate"],
        "MODEL.HEAD_ACT": "softmax",
        "MODEL.FC_INIT_STD": 0.01,
        "RESNET.DEPTH": ours["depth"],
        "RESNET.WIDTH_PER_GROUP": ours["width_per_group"],
        "RESNET.NUM_GROUPS": 1,
        "RESNET.TRANS_FUNC": "basic_transform" if basic else "bottleneck_transform",
        "RESNET.STRIDE_1X1": False,
        "RESNET.ZERO_INIT_FINAL_BN": ours["zero_init_final_bn"],
        # Every block of a stage takes the stage's temporal kernel, as ours.
        "RESNET.NUM_BLOCK_TEMP_KERNEL": (
            [[2, 2]] * 4 if basic else [[3, 3], [4, 4], [6, 6], [3, 3]]
        ),
        "RESNET.SPATIAL_STRIDES": [[1, 1], [2, 2], [2, 2], [2, 2]],
        "RESNET.SPATIAL_DILATIONS": [[1, 1], [1, 1], [1, 1], [1, 1]],
        "NONLOCAL.LOCATION": [[[], []], [[], []], [[], []], [[], []]],
        "NONLOCAL.GROUP": [[1, 1], [1, 1], [1, 1], [1, 1]],
        "NONLOCAL.POOL": [[[1, 2, 2], [1, 2, 2]]] * 4,
        "SLOWFAST.ALPHA": ours["alpha"],
        "SLOWFAST.BETA_INV": ours["beta_inv"],
        "SLOWFAST.FUSION_CONV_CHANNEL_RATIO": ours["fusion_conv_channel_ratio"],
        "SLOWFAST.FUSION_KERNEL_SZ": ours["fusion_kernel_sz"],
        "DATA.NUM_FRAMES": FRAMES,
        "DATA.TRAIN_CROP_SIZE": CROP,
        "DATA.INPUT_CHANNEL_NUM": [3, 3],
        "DETECTION.ENABLE": False,
        "MULTIGRID.SHORT_CYCLE": False,
        "BN.NORM_TYPE": norm_type,
        "BN.NUM_SPLITS": num_splits,
    }
    keys.update(nonlocal_ or {})
    set_keys(cfg, keys)
    return cfg, keys


def generated(name, shape):
    """float32 values for the tensor `name` of `shape`, from a counter hash (no RNG, so Rust can
    repeat it exactly): u_i = fmix32(fnv1a(name) + i * 0x9E3779B9 mod 2^32) >> 8, / 2^24, in
    [0, 1); then, by kind, in float32 arithmetic:
      conv weight (5-D)        (u - 0.5) * f32(sqrt(24 / fan_in))   (Kaiming-normal's variance)
      head.projection.weight   (u - 0.5) * f32(sqrt(3 / fan_in))
      *.running_mean           (u - 0.5) * 0.2
      *.running_var            0.5 * u + 0.75
      other *.weight (BN)      u + 0.5
      other *.bias             (u - 0.5) * 0.4
      input/*                  (u - 0.5) * f32(sqrt(12))
    fan_in = the product of shape[1:]."""
    import math

    import numpy as np

    n = math.prod(shape)
    h = 0x811C9DC5
    for b in name.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    m = np.uint64(0xFFFFFFFF)
    x = (np.uint64(h) + np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B9)) & m
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x85EBCA6B)) & m
    x ^= x >> np.uint64(13)
    x = (x * np.uint64(0xC2B2AE35)) & m
    x ^= x >> np.uint64(16)
    u = (x >> np.uint64(8)).astype(np.float32) / np.float32(1 << 24)
    f = np.float32
    fan_in = math.prod(shape[1:])
    if name.startswith("input/"):
        v = (u - f(0.5)) * f(math.sqrt(12.0))
    elif len(shape) == 5:
        v = (u - f(0.5)) * f(math.sqrt(24.0 / fan_in))
    elif name == "head.projection.weight":
        v = (u - f(0.5)) * f(math.sqrt(3.0 / fan_in))
    elif name.endswith("running_mean"):
        v = (u - f(0.5)) * f(0.2)
    elif name.endswith("running_var"):
        v = f(0.5) * u + f(0.75)
    elif name.endswith("weight"):
        v = u + f(0.5)
    else:
        v = (u - f(0.5)) * f(0.4)
    assert v.dtype == np.float32
    return v.reshape(shape)


def slowfast_commit(slowfast_dir, commit):
    if commit is not None:
        return commit
    return subprocess.run(
        ["git", "-C", slowfast_dir, "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


# The test clip of `frames`: FRAME_COUNT frames of FRAME_SIZE x FRAME_SIZE, normalised with
# per-channel means and stds that differ, so a channel normalised with another channel's
# numbers shows.
FRAME_SIZE = 16
FRAME_COUNT = 4
FRAME_MEAN = [0.40, 0.45, 0.50]
FRAME_STD = [0.20, 0.225, 0.25]
FRAME_ALPHA = 2


def frame_rgb(f):
    """Frame f of the test clip, RGB uint8 [H, W, 3]: 8x8 blocks of one colour each. A flat
    block aligned with JPEG's 8x8 grid is DC-only, which every decoder reconstructs alike (to
    a grey level); red is 200-230, green 100-145 and blue 20-95, so swapped channels are far
    apart."""
    import numpy as np

    img = np.zeros((FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
    blocks = FRAME_SIZE // 8
    for by in range(blocks):
        for bx in range(blocks):
            k = (f * blocks + by) * blocks + bx
            rgb = (200 + (k % 4) * 10, 100 + k * 3, 20 + k * 5)
            img[by * 8 : by * 8 + 8, bx * 8 : bx * 8 + 8] = rgb
    return img


def frames_main(slowfast_dir, out_dir, commit):
    """Writes OUT_DIR/{000001..}.jpg, FRAME_COUNT JPEG frames (cv2.imencode, quality 95, 4:4:4
    chroma) of frame_rgb, and OUT_DIR/expected.json: what PySlowFast's Charades and SSv2
    loading does with them (slowfast/datasets/charades.py and ssv2.py, less the spatial
    sampling, which is the identity at this size): utils.retry_load_images (cv2.imdecode:
    BGR), utils.tensor_normalize with DATA.MEAN / DATA.STD, T H W C -> C T H W, then
    utils.pack_pathway_output with DATA.REVERSE_INPUT_CHANNEL False and True (MODEL.ARCH
    slowfast, SLOWFAST.ALPHA FRAME_ALPHA). tests/frame_channels.rs loads the same frames
    through our Charades frame list and compares.

    expected.json: frames (file names), height, width, mean, std, alpha; cv2_bgr (the decoded
    uint8 values, T H W C, BGR); reverse_input_channel_false / _true: {fast: [3, T, H, W],
    slow: [3, T / alpha, H, W]}, flattened, rounded to 6 decimals; slowfast_commit, opencv,
    torch."""
    import cv2
    import torch

    commit = slowfast_commit(slowfast_dir, commit)
    sys.path.insert(0, os.path.abspath(slowfast_dir))
    import slowfast  # noqa: F401  (the real package; its datasets/__init__ is skipped below)

    # utils.py alone: the datasets package's __init__ imports every dataset (av, pandas, ...),
    # and utils.py's augmentation imports (torchvision, PIL, scipy) are not on this path.
    datasets = os.path.join(os.path.abspath(slowfast_dir), "slowfast", "datasets")
    module("slowfast.datasets", path=datasets)
    module("slowfast.datasets.transform", ["create_random_augment"])
    module("slowfast.datasets.random_erasing", ["RandomErasing"])
    module("torchvision", package=True)
    module("torchvision.transforms")
    from slowfast.config.defaults import get_cfg
    from slowfast.datasets import utils

    os.makedirs(out_dir, exist_ok=True)
    names = []
    for f in range(FRAME_COUNT):
        ok, jpeg = cv2.imencode(
            ".jpg",
            frame_rgb(f)[:, :, ::-1],  # cv2 encodes BGR
            [
                cv2.IMWRITE_JPEG_QUALITY,
                95,
                cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
            ],
        )
        assert ok
        names.append(f"{f + 1:06d}.jpg")
        with open(os.path.join(out_dir, names[-1]), "wb") as out:
            out.write(jpeg.tobytes())

    cfg = get_cfg()
    cfg.MODEL.ARCH = "slowfast"
    cfg.SLOWFAST.ALPHA = FRAME_ALPHA
    cfg.DATA.MEAN = FRAME_MEAN
    cfg.DATA.STD = FRAME_STD
    # charades.py / ssv2.py, in their order.
    frames = torch.as_tensor(utils.retry_load_images([os.path.join(out_dir, n) for n in names], 1))
    decoded = frames.clone()
    frames = utils.tensor_normalize(frames, cfg.DATA.MEAN, cfg.DATA.STD)
    frames = frames.permute(3, 0, 1, 2)

    def values(t):
        return [round(v, 6) for v in t.flatten().tolist()]

    expected = {
        "frames": names,
        "height": FRAME_SIZE,
        "width": FRAME_SIZE,
        "mean": FRAME_MEAN,
        "std": FRAME_STD,
        "alpha": FRAME_ALPHA,
        "cv2_bgr": decoded.flatten().tolist(),
    }
    for flag in (False, True):
        cfg.DATA.REVERSE_INPUT_CHANNEL = flag
        slow, fast = utils.pack_pathway_output(cfg, frames.clone())
        expected[f"reverse_input_channel_{str(flag).lower()}"] = {
            "fast": values(fast),
            "slow": values(slow),
        }
    expected.update(slowfast_commit=commit, opencv=cv2.__version__, torch=torch.__version__)
    with open(os.path.join(out_dir, "expected.json"), "w") as out:
        json.dump(expected, out)
        out.write("\n")
    print(f"SlowFast {commit}, OpenCV {cv2.__version__}: {len(names)} frames")


# PySlowFast's shipped configs whose keys `config` writes as fixtures, and the cases whose
# merged configs it records: (fixture YAML, KEY VALUE opts). child.yaml and grandchild.yaml are
# written by hand (they inherit the shipped K400 multigrid config through _BASE_).
SHIPPED_CONFIGS = [
    "Kinetics/SLOWFAST_8x8_R50.yaml",
    "Kinetics/SLOWFAST_8x8_R50_stepwise.yaml",
    "Kinetics/SLOWFAST_8x8_R50_stepwise_multigrid.yaml",
    "Charades/SLOWFAST_16x8_R50.yaml",
    "Charades/SLOWFAST_16x8_R50_multigrid.yaml",
    "SSv2/SLOWFAST_16x8_R50.yaml",
    "SSv2/SLOWFAST_16x8_R50_multigrid.yaml",
]
CONFIG_CASES = [(c.replace("/", "_"), []) for c in SHIPPED_CONFIGS] + [
    ("child.yaml", []),
    ("grandchild.yaml", []),
    (
        "Kinetics_SLOWFAST_8x8_R50_stepwise_multigrid.yaml",
        [
            "MULTIGRID.LONG_CYCLE", "False",
            "MULTIGRID.SHORT_CYCLE", "False",
            "TRAIN.BATCH_SIZE", "32",
            "NUM_GPUS", "4",
            "NUM_SHARDS", "2",
            "SOLVER.STEPS", "[0, 50, 80]",
            "SOLVER.LRS", "[1, 0.1, 0.01]",
            "SOLVER.MAX_EPOCH", "100",
            "SOLVER.BASE_LR_SCALE_NUM_SHARDS", "True",
            "DATA.MEAN", "(0.4, 0.45, 0.5)",
            "DATA.PATH_TO_DATA_DIR", "/data/k400",
            "RNG_SEED", "7",
        ],
    ),
]


def plain(v):
    """A config value as JSON holds it: tuples as lists, CfgNodes as dicts."""
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    return v


def flatten(node, prefix=""):
    for k, v in node.items():
        if isinstance(v, dict):
            yield from flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", plain(v)


def config_main(slowfast_dir, out_dir, defaults_path, commit):
    """Writes what src/schedule/pyslowfast/ and tests/config_yaml.rs read of PySlowFast's
    config system (slowfast/config/defaults.py on fvcore's CfgNode):

      DEFAULTS_JSON           every key of get_cfg() with its default, in PySlowFast's order:
                              {"slowfast_commit", "fvcore", "keys": [[KEY, VALUE], ...]}
                              (tuples as lists, None and the infinite floats as null)
      OUT_DIR/<Dataset>_<name>.yaml
                              for each of SHIPPED_CONFIGS, the keys that file sets, with the
                              values PySlowFast's loader gives them (merge_from_file)
      OUT_DIR/expected.json   for each of CONFIG_CASES, PySlowFast's config after
                              get_cfg(), merge_from_file (fvcore's _BASE_ inheritance),
                              merge_from_list(opts) and assert_and_infer_cfg, as the keys whose
                              value differs from the default: [{"yaml", "opts", "set": {KEY:
                              VALUE}}], plus slowfast_commit and fvcore
    """
    import math

    import fvcore
    import yaml

    commit = slowfast_commit(slowfast_dir, commit)
    sys.path.insert(0, os.path.abspath(slowfast_dir))
    from slowfast.config.defaults import assert_and_infer_cfg, get_cfg

    fv = getattr(fvcore, "__version__", "unknown")
    defaults = dict(flatten(get_cfg()))
    with open(defaults_path, "w") as out:
        out.write(f'{{"slowfast_commit": "{commit}", "fvcore": "{fv}", "keys": [\n')
        # JSON has no infinity: CONTRASTIVE.DELTA_CLIPS_MIN / MAX (-inf, inf) are written null.
        finite = {
            k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in defaults.items()
        }
        out.write(",\n".join(json.dumps([k, v], allow_nan=False) for k, v in finite.items()))
        out.write("\n]}\n")

    # Sections as blocks, lists in one line, as the shipped files write them.
    class dumper(yaml.SafeDumper):
        pass

    dumper.add_representer(
        list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
    )
    os.makedirs(out_dir, exist_ok=True)
    for shipped in SHIPPED_CONFIGS:
        path = os.path.join(slowfast_dir, "configs", shipped)
        with open(path) as f:
            raw = yaml.safe_load(f)
        cfg = get_cfg()
        cfg.merge_from_file(path)

        def pick(raw_node, cfg_node):
            return {
                k: pick(v, cfg_node[k]) if isinstance(v, dict) else plain(cfg_node[k])
                for k, v in raw_node.items()
            }

        with open(os.path.join(out_dir, shipped.replace("/", "_")), "w") as out:
            out.write(
                f"# Written by scripts/pyslowfast_fixture.py config: the keys that SlowFast's\n"
                f"# configs/{shipped} sets (commit {commit[:12]}), with the values\n"
                f"# PySlowFast's loader gives them.\n"
            )
            yaml.dump(pick(raw, cfg), out, Dumper=dumper, sort_keys=False)

    cases = []
    for name, opts in CONFIG_CASES:
        cfg = get_cfg()
        cfg.merge_from_file(os.path.join(out_dir, name))
        cfg.merge_from_list(list(opts))
        cfg = assert_and_infer_cfg(cfg)
        changed = {k: v for k, v in flatten(cfg) if v != defaults[k]}
        cases.append({"yaml": name, "opts": opts, "set": changed})
    with open(os.path.join(out_dir, "expected.json"), "w") as out:
        json.dump({"slowfast_commit": commit, "fvcore": fv, "cases": cases}, out, indent=1)
        out.write("\n")
    print(f"SlowFast {commit}: {len(defaults)} default keys, {len(cases)} cases")


def resume_main(slowfast_dir, output_dir):
    """PySlowFast's own resume of a multigrid `checkpoint export` (TRAIN.AUTO_RESUME): its
    checkpoint.get_last_checkpoint finds the file by PySlowFast's name under OUTPUT_DIR; the
    config is the .pyth's `cfg` merged into get_cfg() (yacs: a key PySlowFast lacks or a value
    of another type is an error); then train_net.train's steps: init_multigrid and
    update_long_cycle(cfg, 0) with the long cycle, build_model, construct_optimizer,
    load_checkpoint (model and optimizer.load_state_dict) -> start_epoch, and with the long
    cycle update_long_cycle(cfg, start_epoch) and, where the shape changes, a new model and
    optimizer loaded again from the same file (train_net asserts its name). Prints
    {"start_epoch", "file", "loads": [{"when", "norm_type", "groups", "ok", "error",
    "momentum", "shapes_match"}]}; `shapes_match`: every loaded momentum buffer has its
    parameter's shape (load_state_dict maps by position and checks only group sizes).

    Departures, all outside what is checked: the model is built on the CPU (NUM_GPUS 0 while
    build_model runs, restored after); pytorchvideo's NaiveSyncBatchNorm3d (sync_batchnorm) is
    replaced by a BatchNorm3d subclass, the same _NormBase for construct_optimizer's groups."""
    sys.path.insert(0, os.path.abspath(slowfast_dir))
    stub_missing_modules()
    import tempfile

    import torch

    class NaiveSyncBatchNorm3d(torch.nn.BatchNorm3d):
        def __init__(self, num_sync_devices=1, global_sync=False, **kwargs):
            super().__init__(**kwargs)

    if "pytorchvideo.layers.batch_norm" in sys.modules:
        sys.modules["pytorchvideo.layers.batch_norm"].NaiveSyncBatchNorm3d = NaiveSyncBatchNorm3d
    import slowfast.models.optimizer as optim
    import slowfast.utils.checkpoint as cu
    from slowfast.config.defaults import assert_and_infer_cfg, get_cfg
    from slowfast.models import build_model
    from slowfast.utils.multigrid import MultigridSchedule

    if hasattr(sys.modules.get("slowfast.models.batchnorm_helper"), "NaiveSyncBatchNorm3d"):
        sys.modules["slowfast.models.batchnorm_helper"].NaiveSyncBatchNorm3d = NaiveSyncBatchNorm3d
    torch.set_num_threads(1)
    if not cu.has_checkpoint(output_dir):
        raise SystemExit(f"no checkpoint under {output_dir}/checkpoints")
    last = cu.get_last_checkpoint(output_dir, task="")
    saved = torch.load(last, map_location="cpu", weights_only=False)
    cfg = get_cfg()
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(saved["cfg"])
        f.flush()
        cfg.merge_from_file(f.name)
    cfg = assert_and_infer_cfg(cfg)
    cfg.OUTPUT_DIR = output_dir

    def build():
        gpus, cfg.NUM_GPUS = cfg.NUM_GPUS, 0
        try:
            model = build_model(cfg)
        finally:
            cfg.NUM_GPUS = gpus
        return model, optim.construct_optimizer(model, cfg)

    def load(when, path):
        model, optimizer = build()
        out = {"when": when, "norm_type": cfg.BN.NORM_TYPE,
               "groups": [len(g["params"]) for g in optimizer.param_groups]}
        try:
            epoch = cu.load_checkpoint(path, model, False, optimizer)
        except Exception as e:  # noqa: BLE001  (reported, the caller decides)
            out.update(ok=False, error=f"{type(e).__name__}: {e}")
            return out, None
        pairs = [(p, optimizer.state.get(p, {}).get("momentum_buffer"))
                 for g in optimizer.param_groups for p in g["params"]]
        out.update(ok=True, error=None,
                   momentum=sum(1 for _, b in pairs if b is not None),
                   shapes_match=all(b is None or b.shape == p.shape for p, b in pairs))
        return out, epoch

    multigrid = None
    if cfg.MULTIGRID.LONG_CYCLE or cfg.MULTIGRID.SHORT_CYCLE:
        multigrid = MultigridSchedule()
        cfg = multigrid.init_multigrid(cfg)
        if cfg.MULTIGRID.LONG_CYCLE:
            cfg, _ = multigrid.update_long_cycle(cfg, cur_epoch=0)
    first, epoch = load("start", last)
    loads = [first]
    start_epoch = None if epoch is None else epoch + 1
    if epoch is None and cfg.MULTIGRID.LONG_CYCLE:
        # train_net stops here; for the report, the model of the epoch the file resumes at.
        cfg, _ = multigrid.update_long_cycle(cfg, int(saved["epoch"]) + 1)
        loads.append(load(f"direct, epoch {int(saved['epoch']) + 1}", last)[0])
    if cfg.MULTIGRID.LONG_CYCLE and start_epoch is not None and start_epoch < cfg.SOLVER.MAX_EPOCH:
        cfg, changed = multigrid.update_long_cycle(cfg, start_epoch)
        if changed:
            assert "{:05d}.pyth".format(start_epoch) in last, last
            loads.append(load(f"long-cycle change at epoch {start_epoch}", last)[0])
    print(json.dumps({"start_epoch": start_epoch, "file": last, "loads": loads}))


# `resnet`: PySlowFast's single-pathway ResNet (MODEL_NAME ResNet) per MODEL.ARCH, R50 at
# width 8, 4 clips of 8 frames at 64 px, weights and input from generated() (only outputs and
# names are stored). Non-local blocks after blocks 1, 3 of res3 and 1, 3, 5 of res4 (I3D-NL's
# NONLOCAL.LOCATION).
RESNET_NETS = {
    "i3d_nl": dict(arch="i3d", instantiation="softmax", nonlocal_=True),
    "slow": dict(arch="slow", instantiation="dot_product", nonlocal_=False),
    "c2d": dict(arch="c2d", instantiation="softmax", nonlocal_=False),
    # Frame groups (NONLOCAL.GROUP 2 at res3 and res4) and a temporal pool of the keys (res4).
    "slow_nl": dict(
        arch="slow",
        instantiation="dot_product",
        nonlocal_=True,
        group=[[1], [2], [2], [1]],
        pool=[[[1, 2, 2]], [[1, 2, 2]], [[2, 2, 2]], [[1, 2, 2]]],
    ),
}
RESNET_WIDTH = 8
RESNET_CROP = 64
NL_LOCATION = [[[]], [[1, 3]], [[1, 3, 5]], [[]]]
# SlowFast-NL (SLOWFAST_NLN_8x8_R50.yaml's non-local blocks, on the slow pathway) at depth 50,
# width 8, in resnet_main as `slowfast_nl`: weights and inputs generated.
SLOWFAST_NL = dict(OURS, width_per_group=8)
SLOWFAST_NL_KEYS = {
    "NONLOCAL.LOCATION": [[[], []], [[1, 3], []], [[1, 3, 5], []], [[], []]],
    "NONLOCAL.GROUP": [[1, 1], [1, 1], [1, 1], [1, 1]],
    "NONLOCAL.POOL": [[[1, 2, 2], [1, 2, 2]]] * 4,
    "NONLOCAL.INSTANTIATION": "softmax",
}

# The nets trained for SGD_STEPS steps by resnet_sgd_losses (I3D-NL R50 and Slow R50), at
# width SGD_WIDTH from PySlowFast's own initialisation under torch.manual_seed(SGD_SEED).
SGD_NETS = ("i3d_nl", "slow")
SGD_STEPS = 8
SGD_LR = 0.01
SGD_WIDTH = 4
SGD_SEED = 0


def sgd_labels(step):
    """The labels of SGD step `step`: clip i is class (3 i + step) mod 10."""
    return [(3 * i + step) % 10 for i in range(N)]


def resnet_sgd_losses(model, cfg):
    """PySlowFast's training step on `model` (float64, train mode, BatchNorm3d) for SGD_STEPS
    steps: construct_optimizer with SOLVER's defaults (momentum 0.9, Nesterov, dampening 0,
    weight decay 1e-4, BN.WEIGHT_DECAY 0) at BASE_LR SGD_LR, cross-entropy (MODEL.LOSS_FUNC's
    default) on generated `input/sgd<k>` with sgd_labels(k). Returns the SGD_STEPS losses, each
    before its update, as train_net.train_epoch computes them."""
    import torch
    import slowfast.models.optimizer as optim

    cfg.SOLVER.BASE_LR = SGD_LR
    opt = optim.construct_optimizer(model, cfg)
    loss_fun = torch.nn.CrossEntropyLoss(reduction="mean")
    losses = []
    for k in range(SGD_STEPS):
        x = torch.from_numpy(generated(f"input/sgd{k}", (N, 3, FRAMES, RESNET_CROP, RESNET_CROP)))
        loss = loss_fun(model([x.double()]), torch.tensor(sgd_labels(k)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def load_generated(model):
    """Loads generated() weights and buffers into `model` by name (num_batches_tracked kept);
    returns its state_dict."""
    import torch

    sd = {
        k: v if k.endswith("num_batches_tracked") else torch.from_numpy(generated(k, tuple(v.shape)))
        for k, v in model.state_dict().items()
    }
    model.load_state_dict(sd, strict=True)
    return sd


def names_and_shapes(sd):
    """[name, shape] of every tensor of a state_dict but num_batches_tracked."""
    return [[k, list(v.shape)] for k, v in sd.items() if not k.endswith("num_batches_tracked")]


def resnet_cfg(get_cfg, net, norm_type, num_splits, depth=50, width=RESNET_WIDTH):
    """PySlowFast's cfg for RESNET_NETS[net], and the Rust ModelConfig (JSON) of the same
    network."""
    spec = RESNET_NETS[net]
    cfg = get_cfg()
    location = NL_LOCATION if spec["nonlocal_"] else [[[]]] * 4
    group = spec.get("group", [[1]] * 4)
    pool = spec.get("pool", [[[1, 2, 2]]] * 4)
    keys = {
        "NUM_GPUS": 0,
        "MODEL.ARCH": spec["arch"],
        "MODEL.MODEL_NAME": "ResNet",
        "MODEL.NUM_CLASSES": 10,
        "MODEL.DROPOUT_RATE": 0.0,
        "MODEL.HEAD_ACT": "softmax",
        "RESNET.DEPTH": depth,
        "RESNET.WIDTH_PER_GROUP": width,
        "RESNET.NUM_GROUPS": 1,
        "RESNET.TRANS_FUNC": "bottleneck_transform",
        "RESNET.STRIDE_1X1": False,
        "RESNET.ZERO_INIT_FINAL_BN": True,
        "RESNET.NUM_BLOCK_TEMP_KERNEL": [[3], [4], [23 if depth == 101 else 6], [3]],
        "NONLOCAL.LOCATION": location,
        "NONLOCAL.GROUP": group,
        "NONLOCAL.POOL": pool,
        "NONLOCAL.INSTANTIATION": spec["instantiation"],
        "DATA.NUM_FRAMES": FRAMES,
        "DATA.TRAIN_CROP_SIZE": RESNET_CROP,
        "DATA.INPUT_CHANNEL_NUM": [3],
        "DETECTION.ENABLE": False,
        "MULTIGRID.SHORT_CYCLE": False,
        "BN.NORM_TYPE": norm_type,
        "BN.NUM_SPLITS": num_splits,
    }
    set_keys(cfg, keys)
    ours = {
        "arch": spec["arch"],
        "depth": depth,
        "width_per_group": width,
        "num_classes": 10,
        "dropout_rate": 0.0,
        "zero_init_final_bn": True,
        "nonlocal_location": location,
        "nonlocal_group": group,
        "nonlocal_pool": pool,
        "nonlocal_instantiation": spec["instantiation"],
    }
    return cfg, keys, ours


def resnet_main(slowfast_dir, out_dir, commit):
    """Writes OUT_DIR/outputs.safetensors and config.json for tests/pyslowfast.rs's ResNet
    tests. Per net <k> of RESNET_NETS, each also `_f64` (a float64 run, rounded to float32):
      <k>/eval_probs       [4,10] eval-mode forward (head softmax) on generated `input/clip`
                           [4,3,8,64,64]
      <k>/eval_logits      head.projection's output before that softmax
      <k>/eval_probs_wide  [2,10] eval on clips 0|2 and 1|3 side by side along W (64x128): the
                           fixed AvgPool3d scores 1x3 positions, softmax averaged
      <k>/train_logits     train mode, BatchNorm3d
      <k>/train_logits_bn2 train mode, SubBatchNorm3d NUM_SPLITS 2
    bn_stats.safetensors: `<k>/<bn>.running_mean|running_var`, the running statistics of every
    BN (generated `input/calib` [4,3,8,64,64] through the model in train mode, momentum 1, float64,
    rounded), which replace the generated ones.
    config.json: per net PySlowFast's cfg keys, our ModelConfig and the state_dict's names and
    shapes (without num_batches_tracked); `i3d_nl_r101`: names and shapes of I3D-NL R101;
    for SGD_NETS, `sgd`: {"model": our ModelConfig at SGD_WIDTH, "losses": resnet_sgd_losses
    in float64}, from the weights PySlowFast's build_model initialises under
    torch.manual_seed(SGD_SEED), stored in sgd_weights.safetensors as `<k>/<name>` (float32;
    running statistics and num_batches_tracked left out: training mode does not read them)."""
    sys.path.insert(0, os.path.abspath(slowfast_dir))
    commit = slowfast_commit(slowfast_dir, commit)
    stub_missing_modules()
    import torch
    from safetensors.torch import save_file
    from slowfast.config.defaults import get_cfg
    from slowfast.models import build_model
    from slowfast.utils.checkpoint import normal_to_sub_bn

    torch.set_num_threads(2)
    outputs = {}
    nets = {}
    x = torch.from_numpy(generated("input/clip", (N, 3, FRAMES, RESNET_CROP, RESNET_CROP)))
    wide = torch.cat([x[: N // 2], x[N // 2 :]], dim=4)
    calib = torch.from_numpy(generated("input/calib", (N, 3, FRAMES, RESNET_CROP, RESNET_CROP)))
    stats = {}
    sgd_weights = {}
    for net in RESNET_NETS:
        cfg, keys, ours = resnet_cfg(get_cfg, net, "batchnorm", 1)
        model = build_model(cfg)
        sd = load_generated(model)
        # Running statistics of a calibration batch (generated `input/calib`; momentum 1, in
        # float64), so eval mode neither explodes nor equals train mode; stored rounded to
        # float32, and those rounded values are the model's here too.
        with torch.no_grad():
            m64 = copy.deepcopy(model).double().train()
            bns = [b for b in m64.modules() if isinstance(b, torch.nn.BatchNorm3d)]
            for b in bns:
                b.momentum = 1.0
            m64([calib.double()])
            calibrated = {
                k: v.float()
                for k, v in m64.state_dict().items()
                if k.endswith("running_mean") or k.endswith("running_var")
            }
        sd.update(calibrated)
        model.load_state_dict(sd, strict=True)
        stats.update({f"{net}/{k}": v for k, v in calibrated.items()})
        cfg2, _, _ = resnet_cfg(get_cfg, net, "sub_batchnorm", 2)
        sub = build_model(cfg2)
        sub.load_state_dict(normal_to_sub_bn(copy.deepcopy(sd), sub.state_dict()), strict=True)
        with torch.no_grad():
            for dtype, suffix in ((torch.float32, ""), (torch.float64, "_f64")):
                m = copy.deepcopy(model).to(dtype).eval()
                captured = []
                hook = m.head.projection.register_forward_hook(
                    lambda _m, _i, o: captured.append(o)
                )
                outputs[f"{net}/eval_probs{suffix}"] = m([x.to(dtype)])
                hook.remove()
                outputs[f"{net}/eval_logits{suffix}"] = captured[0].reshape(N, -1)
                outputs[f"{net}/eval_probs_wide{suffix}"] = m([wide.to(dtype)])
                outputs[f"{net}/train_logits{suffix}"] = m.train()([x.to(dtype)])
                s = copy.deepcopy(sub).to(dtype).train()
                outputs[f"{net}/train_logits_bn2{suffix}"] = s([x.to(dtype)])
        for key in ("eval_logits", "eval_probs_wide", "train_logits", "train_logits_bn2"):
            a, b = outputs[f"{net}/{key}"].double(), outputs[f"{net}/{key}_f64"]
            print(f"{net}/{key}: max {b.abs().max():.2f}, float32 - float64 {(a - b).abs().max():.2e}")
        apart = (outputs[f"{net}/train_logits_bn2_f64"] - outputs[f"{net}/train_logits_f64"]).abs()
        print(f"{net}: bn2 - bn1 train logits {apart.max():.2e}")
        nets[net] = {
            "model": ours,
            "pyslowfast_cfg": keys,
            "state_dict": names_and_shapes(sd),
        }
        if net in SGD_NETS:
            cfg_s, _, ours_s = resnet_cfg(get_cfg, net, "batchnorm", 1, width=SGD_WIDTH)
            torch.manual_seed(SGD_SEED)
            init = build_model(cfg_s)
            sgd_weights.update(
                {
                    f"{net}/{k}": v.detach().float().contiguous()
                    for k, v in init.state_dict().items()
                    if not k.endswith(("num_batches_tracked", "running_mean", "running_var"))
                }
            )
            losses = resnet_sgd_losses(init.double().train(), cfg_s)
            nets[net]["sgd"] = {"model": ours_s, "losses": losses}
            print(f"{net}: SGD losses {[round(v, 4) for v in losses]}")
    # SlowFast-NL: slow `input/slow_nl` [4,3,2,64,64] and fast `input/clip`; eval and train
    # logits (1 and 2 BN groups), float64, as `slowfast_nl/<key>_f64`.
    cfg, keys = pyslowfast_cfg(get_cfg, "batchnorm", 1, SLOWFAST_NL, SLOWFAST_NL_KEYS)
    cfg.DATA.TRAIN_CROP_SIZE = RESNET_CROP
    keys["DATA.TRAIN_CROP_SIZE"] = RESNET_CROP
    model = build_model(cfg)
    sd = load_generated(model)
    cfg2, _ = pyslowfast_cfg(get_cfg, "sub_batchnorm", 2, SLOWFAST_NL, SLOWFAST_NL_KEYS)
    cfg2.DATA.TRAIN_CROP_SIZE = RESNET_CROP
    sub = build_model(cfg2)
    sub.load_state_dict(normal_to_sub_bn(copy.deepcopy(sd), sub.state_dict()), strict=True)
    slow = torch.from_numpy(generated("input/slow_nl", (N, 3, FRAMES // 4, RESNET_CROP, RESNET_CROP)))
    with torch.no_grad():
        m = copy.deepcopy(model).double().eval()
        captured = []
        hook = m.head.projection.register_forward_hook(lambda _m, _i, o: captured.append(o))
        m([slow.double(), x.double()])
        hook.remove()
        outputs["slowfast_nl/eval_logits_f64"] = captured[0].reshape(N, -1)
        outputs["slowfast_nl/train_logits_f64"] = m.train()([slow.double(), x.double()])
        s2 = copy.deepcopy(sub).double().train()
        outputs["slowfast_nl/train_logits_bn2_f64"] = s2([slow.double(), x.double()])
    ours = dict(
        SLOWFAST_NL,
        nonlocal_location=SLOWFAST_NL_KEYS["NONLOCAL.LOCATION"],
        nonlocal_instantiation="softmax",
    )
    nets["slowfast_nl"] = {
        "model": ours,
        "pyslowfast_cfg": keys,
        "state_dict": names_and_shapes(sd),
    }
    print(f"slowfast_nl: eval logits max {outputs['slowfast_nl/eval_logits_f64'].abs().max():.2f}")
    cfg, keys, ours = resnet_cfg(get_cfg, "i3d_nl", "batchnorm", 1, depth=101)
    sd = build_model(cfg).state_dict()
    nets["i3d_nl_r101"] = {
        "model": ours,
        "pyslowfast_cfg": keys,
        "state_dict": names_and_shapes(sd),
    }
    os.makedirs(out_dir, exist_ok=True)
    save_file(
        {k: v.contiguous().float() for k, v in outputs.items()},
        os.path.join(out_dir, "outputs.safetensors"),
    )
    save_file(stats, os.path.join(out_dir, "bn_stats.safetensors"))
    save_file(sgd_weights, os.path.join(out_dir, "sgd_weights.safetensors"))
    config = {
        "nets": nets,
        "input": {"name": "input/clip", "batch": N, "num_frames": FRAMES, "crop": RESNET_CROP},
        "weights_and_input": "generated (scripts/pyslowfast_fixture.py, generated())",
        "slowfast_commit": commit,
        "torch": torch.__version__,
    }
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
        f.write("\n")


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "resnet" and len(sys.argv) in (4, 5):
        return resnet_main(sys.argv[2], sys.argv[3], (sys.argv[4:] or [None])[0])
    if len(sys.argv) == 4 and sys.argv[1] == "resume":
        return resume_main(sys.argv[2], sys.argv[3])
    if len(sys.argv) >= 2 and sys.argv[1] == "frames" and len(sys.argv) in (4, 5):
        return frames_main(sys.argv[2], sys.argv[3], (sys.argv[4:] or [None])[0])
    if len(sys.argv) >= 2 and sys.argv[1] == "config" and len(sys.argv) in (5, 6):
        return config_main(sys.argv[2], sys.argv[3], sys.argv[4], (sys.argv[5:] or [None])[0])
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    slowfast_dir, out_dir = sys.argv[1], sys.argv[2]
    sys.path.insert(0, os.path.abspath(slowfast_dir))
    commit = slowfast_commit(slowfast_dir, sys.argv[3] if len(sys.argv) == 4 else None)

    stub_missing_modules()
    import fvcore
    import fvcore.nn.precise_bn as precise_bn
    import torch
    from safetensors.torch import save_file
    from slowfast.config.defaults import get_cfg
    from slowfast.models import build_model
    from slowfast.models.batchnorm_helper import SubBatchNorm3d
    from slowfast.utils.checkpoint import normal_to_sub_bn, sub_to_normal_bn
    from slowfast.utils.misc import aggregate_sub_bn_stats

    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    def rand(*shape):
        return torch.rand(*shape, generator=gen)

    def build(norm_type, num_splits):
        cfg, keys = pyslowfast_cfg(get_cfg, norm_type, num_splits)
        return build_model(cfg), keys

    # The BatchNorm3d model, then non-trivial BN: random affine, running statistics near the
    # statistics of a random batch (so eval mode neither explodes nor matches train mode).
    model, cfg_keys = build("batchnorm", 1)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    with torch.no_grad():
        for bn in bns:
            c = bn.num_features
            bn.weight.copy_(0.5 + rand(c))
            bn.bias.copy_(0.2 * randn(c))
            bn.momentum = 1.0
        model.train()
        model([randn(32, 3, FRAMES // OURS["alpha"], CROP, CROP), randn(32, 3, FRAMES, CROP, CROP)])
        for bn in bns:
            c = bn.num_features
            bn.momentum = 0.1
            bn.running_mean.add_(0.1 * bn.running_var.sqrt() * randn(c))
            bn.running_var.mul_(0.8 + 0.4 * rand(c))
        proj = model.head.projection
        proj.weight.copy_(randn(*proj.weight.shape) / proj.weight.shape[1] ** 0.5)
        proj.bias.copy_(0.3 * randn(*proj.bias.shape))
    model.eval()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    weights = {k: v.contiguous() for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert all(v.dtype == torch.float32 for v in weights.values())
    bn_names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm3d)]

    inputs = {
        "slow": randn(N, 3, FRAMES // OURS["alpha"], CROP, CROP),
        "fast": randn(N, 3, FRAMES, CROP, CROP),
    }
    for j in range(PRECISE_BATCHES):
        inputs[f"precise{j}_slow"] = randn(
            N, 3, FRAMES // OURS["alpha"], PRECISE_CROP, PRECISE_CROP
        )
        inputs[f"precise{j}_fast"] = randn(N, 3, FRAMES, PRECISE_CROP, PRECISE_CROP) * 0.8 + 0.1 * j
    x = [inputs["slow"], inputs["fast"]]

    def sub_bn_model():
        m, _ = build("sub_batchnorm", 2)
        sd = normal_to_sub_bn(copy.deepcopy(state), m.state_dict())
        m.load_state_dict(sd, strict=True)
        return m

    def stats(m, prefix):
        """Running statistics of m under Rust names (PySlowFast's checkpoint conversion, which
        keeps a SubBatchNorm3d's aggregated `bn` statistics and drops `split_bn`)."""
        normal = sub_to_normal_bn(m.state_dict())
        return {
            f"{prefix}/{name}.{s}": normal[f"{name}.{s}"].clone()
            for name in bn_names
            for s in ("running_mean", "running_var")
        }

    outputs = {}
    bn_stats = {}
    with torch.no_grad():
        captured = []
        hook = model.head.projection.register_forward_hook(lambda _m, _i, o: captured.append(o))
        outputs["eval_probs"] = model([t.clone() for t in x])
        hook.remove()
        outputs["eval_logits"] = captured[0].reshape(N, -1)
        assert torch.allclose(outputs["eval_probs"], outputs["eval_logits"].softmax(1), atol=1e-6)

        # Multigrid's head (MULTIGRID.SHORT_CYCLE: AdaptiveAvgPool3d) gives the same numbers here.
        cfg, _ = pyslowfast_cfg(get_cfg, "batchnorm", 1)
        cfg.MULTIGRID.SHORT_CYCLE = True
        adaptive = build_model(cfg)
        adaptive.load_state_dict(state)
        adaptive.eval()
        assert torch.allclose(adaptive([t.clone() for t in x]), outputs["eval_probs"], atol=1e-6)

        # PySlowFast's test-time fully convolutional head: an input wider than TRAIN_CROP_SIZE
        # leaves the fixed AvgPool3d several positions, each scored, softmax averaged. The wide
        # input is derived, not stored: clips 0 and 2 side by side along W, and clips 1 and 3.
        wide = [torch.cat([t[: N // 2], t[N // 2 :]], dim=4) for t in x]
        outputs["eval_probs_wide"] = model([t.clone() for t in wide])
        apart = (adaptive([t.clone() for t in wide]) - outputs["eval_probs_wide"]).abs().max()
        print(f"eval_probs_wide: fully convolutional - global pool {apart:.2e}")

        outputs["train_logits"] = copy.deepcopy(model).train()([t.clone() for t in x])

        sub = sub_bn_model()
        assert sum(isinstance(mm, SubBatchNorm3d) for mm in sub.modules()) == len(bn_names)
        sub.eval()
        d = (sub([t.clone() for t in x]) - outputs["eval_probs"]).abs().max()
        assert d < 1e-5, f"SubBatchNorm3d eval differs by {d}"
        sub.train()
        outputs["train_logits_bn2"] = sub([t.clone() for t in x])

        # The same forwards in float64 (stored rounded to float32): a reference far more exact
        # than float32's own error, which small BN groups amplify (about 1e-3 on
        # train_logits_bn2, 1e-4 on train_logits). All running statistics come from float64
        # runs too.
        x64 = [t.double() for t in x]
        m64 = copy.deepcopy(model).double().eval()
        captured.clear()
        hook = m64.head.projection.register_forward_hook(lambda _m, _i, o: captured.append(o))
        outputs["eval_probs_f64"] = m64([t.clone() for t in x64])
        hook.remove()
        outputs["eval_logits_f64"] = captured[0].reshape(N, -1)
        outputs["eval_probs_wide_f64"] = m64([t.double() for t in wide])
        outputs["train_logits_f64"] = m64.train()([t.clone() for t in x64])
        bn_stats.update(stats(m64, "train_step"))
        sub64 = sub_bn_model().double().train()
        outputs["train_logits_bn2_f64"] = sub64([t.clone() for t in x64])
        assert aggregate_sub_bn_stats(sub64) == len(bn_names)
        bn_stats.update(stats(sub64, "train_step_bn2"))
        for key in (
            "eval_logits",
            "eval_probs",
            "eval_probs_wide",
            "train_logits",
            "train_logits_bn2",
        ):
            d = (outputs[key].double() - outputs[key + "_f64"]).abs().max().item()
            print(f"{key}: float32 - float64 {d:.2e}")

        def precise(m, prefix):
            m.double().train()
            batches = [
                [inputs[f"precise{j}_slow"].double(), inputs[f"precise{j}_fast"].double()]
                for j in range(PRECISE_BATCHES)
            ]
            # tools/train_net.py: calculate_and_update_precise_bn, then aggregate_sub_bn_stats.
            precise_bn.update_bn_stats(m, iter(batches), PRECISE_BATCHES)
            aggregate_sub_bn_stats(m)
            bn_stats.update(stats(m, prefix))

        precise(copy.deepcopy(model), "precise")
        precise(sub_bn_model(), "precise_bn2")
        population = precise_bn._PopulationVarianceEstimator
        precise_bn._PopulationVarianceEstimator = precise_bn._MeanOfBatchVarianceEstimator
        try:
            precise(copy.deepcopy(model), "precise_meanvar")
            precise(sub_bn_model(), "precise_meanvar_bn2")
        finally:
            precise_bn._PopulationVarianceEstimator = population

    # Depth 18 at width 8, beta_inv 8: generated weights and input, outputs stored.
    with torch.no_grad():
        cfg, d18_keys = pyslowfast_cfg(get_cfg, "batchnorm", 1, OURS_D18)
        m18 = build_model(cfg)
        sd18 = {
            k: v
            if k.endswith("num_batches_tracked")
            else torch.from_numpy(generated(k, tuple(v.shape)))
            for k, v in m18.state_dict().items()
        }
        m18.load_state_dict(sd18, strict=True)
        cfg, _ = pyslowfast_cfg(get_cfg, "sub_batchnorm", 2, OURS_D18)
        s18 = build_model(cfg)
        s18.load_state_dict(normal_to_sub_bn(copy.deepcopy(sd18), s18.state_dict()), strict=True)
        x18 = [
            torch.from_numpy(
                generated("input/slow", (N, 3, FRAMES // OURS_D18["alpha"], CROP, CROP))
            ),
            torch.from_numpy(generated("input/fast", (N, 3, FRAMES, CROP, CROP))),
        ]
        cfg, _ = pyslowfast_cfg(get_cfg, "batchnorm", 1, OURS_D18)
        cfg.MULTIGRID.SHORT_CYCLE = True
        a18 = build_model(cfg)
        a18.load_state_dict(sd18, strict=True)
        x40 = [
            torch.from_numpy(
                generated("input/slow40", (2, 3, FRAMES // OURS_D18["alpha"], 40, 40))
            ),
            torch.from_numpy(generated("input/fast40", (2, 3, FRAMES, 40, 40))),
        ]
        for dtype, suffix in ((torch.float32, ""), (torch.float64, "_f64")):
            m = copy.deepcopy(m18).to(dtype).eval()
            xs = [t.to(dtype) for t in x18]
            captured.clear()
            hook = m.head.projection.register_forward_hook(lambda _m, _i, o: captured.append(o))
            outputs[f"d18_eval_probs{suffix}"] = m([t.clone() for t in xs])
            hook.remove()
            outputs[f"d18_eval_logits{suffix}"] = captured[0].reshape(N, -1)
            # 40 px, 2 clips: odd feature maps (20, 10, 5, 3, 2); the fixed head scores 2x2
            # positions, the short cycle's adaptive head pools globally (its logits kept).
            x40s = [t.to(dtype) for t in x40]
            outputs[f"d18_eval_probs_40{suffix}"] = m([t.clone() for t in x40s])
            a = copy.deepcopy(a18).to(dtype).eval()
            captured.clear()
            hook = a.head.projection.register_forward_hook(lambda _m, _i, o: captured.append(o))
            a([t.clone() for t in x40s])
            hook.remove()
            outputs[f"d18_eval_logits_40{suffix}"] = captured[0].reshape(2, -1)
            outputs[f"d18_train_logits{suffix}"] = m.train()([t.clone() for t in xs])
            sub = copy.deepcopy(s18).to(dtype).train()
            outputs[f"d18_train_logits_bn2{suffix}"] = sub([t.clone() for t in xs])
        for key in (
            "eval_logits",
            "eval_probs",
            "eval_probs_40",
            "eval_logits_40",
            "train_logits",
            "train_logits_bn2",
        ):
            d = (outputs[f"d18_{key}"].double() - outputs[f"d18_{key}_f64"]).abs().max().item()
            big = outputs[f"d18_{key}_f64"].abs().max().item()
            print(f"d18_{key}: max {big:.2f}, float32 - float64 {d:.2e}")
        # The first values of one tensor per generator rule, to tell a generator mismatch from a
        # model mismatch.
        for k in (
            "s1.pathway0_stem.conv.weight",
            "s5.pathway1_res1.branch2.b_bn.weight",
            "s5.pathway1_res1.branch2.b_bn.bias",
            "s5.pathway1_res1.branch2.b_bn.running_mean",
            "s5.pathway1_res1.branch2.b_bn.running_var",
            "head.projection.weight",
            "head.projection.bias",
        ):
            outputs[f"d18_probe/{k}"] = sd18[k].flatten()[:8]
        outputs["d18_probe/input/fast"] = x18[1].flatten()[:8]

    os.makedirs(out_dir, exist_ok=True)

    def save(tensors, name):
        save_file(
            {k: v.contiguous().float() for k, v in tensors.items()}, os.path.join(out_dir, name)
        )

    save(weights, "weights.safetensors")
    save(inputs, "inputs.safetensors")
    save(outputs, "outputs.safetensors")
    save(bn_stats, "bn_stats.safetensors")
    config = {
        "model": OURS,
        "pyslowfast_cfg": cfg_keys,
        "pyslowfast_cfg_bn2": {"BN.NORM_TYPE": "sub_batchnorm", "BN.NUM_SPLITS": 2},
        "d18": {
            "model": OURS_D18,
            "pyslowfast_cfg": d18_keys,
            "weights_and_input": "generated (scripts/pyslowfast_fixture.py, generated())",
            "state_dict": [k for k in sd18 if not k.endswith("num_batches_tracked")],
        },
        "input": {"batch": N, "num_frames": FRAMES, "crop": CROP},
        # The head's AvgPool3d kernels [T, H, W], slow then fast (_POOL1 slowfast is all ones).
        "head_pool_fixed": [
            [FRAMES // OURS["alpha"], CROP // 32, CROP // 32],
            [FRAMES, CROP // 32, CROP // 32],
        ],
        "precise_bn": {"batches": PRECISE_BATCHES, "batch": N, "crop": PRECISE_CROP},
        "seed": SEED,
        "slowfast_commit": commit,
        "torch": torch.__version__,
        "fvcore": getattr(fvcore, "__version__", "unknown"),
        "left_out": "num_batches_tracked (int64) of every BN",
    }
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
    print(f"SlowFast {commit}: {len(weights)} weights, {len(bn_names)} BNs, {total} bytes")


if __name__ == "__main__":
    main()
