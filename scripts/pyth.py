#!/usr/bin/env python3
"""PySlowFast `.pyth` checkpoints to and from multigrid's safetensors files.

Embedded in the library (src/train/checkpoint.rs) and run with $MG_PYTHON, else python3; needs
torch only (safetensors files are read and written here, without the safetensors package).

    pyth.py import IN.pyth OUT_DIR [--trust-pickle]
        OUT_DIR (existing, empty) receives model.safetensors (parameters and BN statistics by
        PySlowFast name), optimizer.safetensors (SGD momentum by parameter name, loss scale)
        and, when the checkpoint has one, pyslowfast_cfg.yaml. Prints a JSON summary.
    pyth.py export JOB.json
        JOB names model/optimizer safetensors files and the output .pyth, with the epoch, the
        cfg (nested dict of PySlowFast keys), the SGD settings and the loss scaler's constants.
        The .pyth is written to a temporary file renamed into place.
    pyth.py caffe2 IN.pkl OUT.safetensors [--trust-pickle]
        A PySlowFast Caffe2 checkpoint (CHECKPOINT_TYPE caffe2: a pickled dict, its arrays
        under "blobs" or at the top) as safetensors, blob names unchanged (multigrid converts
        them). Only numpy arrays and plain containers are unpickled, unless --trust-pickle.

Errors: one line on stderr, exit status 1; 3 when torch is missing.
"""
import ctypes
import json
import os
import re
import struct
import sys
from collections import OrderedDict

try:
    import torch
except ImportError as e:  # pragma: no cover - depends on the interpreter
    sys.stderr.write(f"pyth.py: this Python ({sys.executable}) cannot import torch: {e}\n")
    sys.exit(3)


class Fail(Exception):
    pass


# --- safetensors, by hand -------------------------------------------------------------------

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
NAMES = {v: k for k, v in DTYPES.items()}


def read_safetensors(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise Fail(f"{path}: {e.strerror}")
    if len(data) < 8:
        raise Fail(f"{path}: not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise Fail(f"{path}: not a safetensors file (header length {n})")
    try:
        header = json.loads(data[8 : 8 + n])
    except ValueError as e:
        raise Fail(f"{path}: bad safetensors header: {e}")
    base = 8 + n
    out = OrderedDict()
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise Fail(f"{path}: tensor {name} has unsupported dtype {info.get('dtype')}")
        shape = info["shape"]
        start, end = info["data_offsets"]
        if base + end > len(data) or start > end:
            raise Fail(f"{path}: tensor {name} lies outside the file")
        count = 1
        for d in shape:
            count *= d
        if count == 0:
            t = torch.empty(shape, dtype=dtype)
        else:
            t = torch.frombuffer(bytearray(data[base + start : base + end]), dtype=dtype)
            t = t.reshape(shape).clone()
        out[name] = t
    return out


def tensor_bytes(t):
    t = t.detach().cpu().contiguous()
    n = t.numel() * t.element_size()
    return ctypes.string_at(t.data_ptr(), n) if n else b""


def write_safetensors(tensors, path):
    header, blobs, offset = OrderedDict(), [], 0
    for name, t in tensors.items():
        b = tensor_bytes(t)
        dtype = NAMES.get(t.dtype)
        if dtype is None:
            raise Fail(f"tensor {name} has dtype {t.dtype}, which safetensors here does not hold")
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


# --- PySlowFast's module order --------------------------------------------------------------

BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
# Registration order of each module's children in PySlowFast's SlowFast (video_model_builder,
# stem_helper, resnet_helper, head_helper): named_modules() and state_dict() follow it, and so
# does construct_optimizer's parameter list.
RANK = {
    "conv": 0, "conv_f2s": 0, "branch1": 0, "a": 0, "projection": 0, "weight": 0,
    "branch1_bn": 1, "bn": 1, "a_bn": 1, "bias": 1,
    "branch2": 2, "b": 2, "running_mean": 2,
    "b_bn": 3, "running_var": 3,
    "c": 4, "num_batches_tracked": 4,
    "c_bn": 5,
}


def component_key(c):
    m = re.fullmatch(r"s(\d+)(_fuse)?", c)
    if m:
        return (0, int(m.group(1)), 1 if m.group(2) else 0, "")
    if c == "head":
        return (1, 0, 0, "")
    m = re.fullmatch(r"pathway(\d+)_(stem|res|nonlocal)(\d*)", c)
    if m:
        block = int(m.group(3) or 0)
        # ResStage adds pathwayP_resI then, where configured, pathwayP_nonlocalI.
        return (0, int(m.group(1)), 2 * block + (m.group(2) == "nonlocal"), "")
    if c in RANK:
        return (0, RANK[c], 0, "")
    return (2, 0, 0, c)


def pyslowfast_order(names):
    """`names` in PySlowFast's state_dict() order (each module's parameters, then buffers)."""
    return sorted(names, key=lambda n: [component_key(c) for c in n.split(".")])


def is_buffer(name):
    return name.rsplit(".", 1)[-1] in BUFFERS


def is_bn_param(name):
    parts = name.split(".")
    return len(parts) >= 2 and (parts[-2] == "bn" or parts[-2].endswith("_bn"))


# --- import ---------------------------------------------------------------------------------


def normalize(state):
    """PySlowFast's names as a plain-BN SlowFast has them: no DataParallel `module.` prefix,
    sub-batch BN's aggregated statistics (`X.bn.bn.running_mean`) as `X.running_mean`, its
    split statistics dropped, BN scales of shape (C, 1, 1, 1) flattened, no num_batches_tracked.
    Returns (state, notes)."""
    notes = []
    keys = list(state.keys())
    if keys and all(k.startswith("module.") for k in keys):
        state = OrderedDict((k[len("module."):], v) for k, v in state.items())
        notes.append("removed the DataParallel prefix module.")
    out = OrderedDict()
    sub_bn = False
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise Fail(f"model_state[{k!r}] is a {type(v).__name__}, not a tensor")
        if ".split_bn." in k:
            sub_bn = True
            continue
        m = re.fullmatch(r"(.*bn)\.bn\.(running_mean|running_var|num_batches_tracked)", k)
        if m:
            sub_bn = True
            k = f"{m.group(1)}.{m.group(2)}"
        if k.endswith("num_batches_tracked"):
            continue
        if is_bn_param(k) and v.dim() == 4 and all(d == 1 for d in v.shape[1:]):
            v = v[:, 0, 0, 0]
        out[k] = v.detach().cpu().contiguous()
    if sub_bn:
        notes.append("converted sub-batch BN names (bn.bn.*, bn.split_bn.*) to plain BN")
    return out, notes


def map_momentum(opt, state, notes):
    """SGD momentum buffers by parameter name, from torch.optim's state_dict form, when its
    parameter groups match one of construct_optimizer's layouts of this model."""
    if not isinstance(opt, dict) or "param_groups" not in opt or "state" not in opt:
        notes.append("optimizer_state is not a torch.optim state_dict: not imported")
        return OrderedDict()
    groups = [g.get("params", []) for g in opt["param_groups"]]
    params = [k for k in state if not is_buffer(k)]
    bn = [k for k in params if is_bn_param(k)]
    other = [k for k in params if not is_bn_param(k)]
    flat = lambda k: state[k].dim() <= 1 or k.endswith(".bias")
    layouts = {
        "batchnorm": [bn, other],
        "sub_batchnorm": [params],
        "batchnorm, ZERO_WD_1D_PARAM": [bn, [k for k in other if not flat(k)], [k for k in other if flat(k)]],
        "sub_batchnorm, ZERO_WD_1D_PARAM": [[k for k in params if not flat(k)], [k for k in params if flat(k)]],
    }
    sizes = [len(g) for g in groups]
    chosen = None
    for name, layout in layouts.items():
        layout = [g for g in layout if g]
        if [len(g) for g in layout] == sizes:
            chosen = (name, layout)
            break
    if chosen is None:
        notes.append(
            f"optimizer_state has parameter groups of sizes {sizes}, which match no layout of "
            f"PySlowFast's construct_optimizer for these {len(params)} parameters: momentum not imported"
        )
        return OrderedDict()
    by_index = {}
    for g, names in zip(groups, chosen[1]):
        for idx, name in zip(g, names):
            by_index[idx] = name
    out = OrderedDict()
    for idx, s in opt["state"].items():
        if not isinstance(s, dict):
            continue
        if "momentum_buffer" not in s:
            notes.append(f"optimizer_state holds {sorted(s)} rather than SGD momentum: not imported")
            return OrderedDict()
        buf = s["momentum_buffer"]
        if buf is None:
            continue
        name = by_index.get(idx)
        if name is None:
            notes.append(f"optimizer_state has state for parameter index {idx}, which no group lists: momentum not imported")
            return OrderedDict()
        if tuple(buf.shape) != tuple(state[name].shape):
            notes.append(
                f"momentum for parameter {idx} has shape {list(buf.shape)} but {name} is "
                f"{list(state[name].shape)}: momentum not imported"
            )
            return OrderedDict()
        out[name] = buf.detach().cpu().contiguous()
    notes.append(f"momentum of {len(out)} parameters mapped by construct_optimizer's {chosen[0]} layout")
    return out


def cmd_import(src, out_dir, trust):
    try:
        ckpt = torch.load(src, map_location="cpu", weights_only=not trust)
    except FileNotFoundError:
        raise Fail(f"{src}: no such file")
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = "" if trust else (
            " (it may hold Python objects beyond tensors and plain values; if you trust the "
            "file, import it with --trust-pickle, which runs code stored in it)"
        )
        raise Fail(f"{src}: torch.load failed: {msg}{hint}")
    if isinstance(ckpt, dict) and "model_state" in ckpt:
        model_state = ckpt["model_state"]
    elif isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        model_state, ckpt = ckpt, {}
    else:
        keys = sorted(map(str, ckpt.keys())) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise Fail(f"{src}: not a PySlowFast checkpoint: no model_state (it holds {keys})")
    if not isinstance(model_state, dict):
        raise Fail(f"{src}: model_state is a {type(model_state).__name__}, not a state dict")
    state, notes = normalize(model_state)
    if not state:
        raise Fail(f"{src}: model_state holds no tensors")
    optimizer = OrderedDict()
    if "optimizer_state" in ckpt and ckpt["optimizer_state"] is not None:
        optimizer = map_momentum(ckpt["optimizer_state"], state, notes)
    else:
        notes.append("no optimizer_state: momentum starts at zero")
    scaler = ckpt.get("scaler_state")
    if isinstance(scaler, dict) and "scale" in scaler:
        optimizer["amp.loss_scale"] = torch.tensor(float(scaler["scale"]), dtype=torch.float64)
        optimizer["amp.growth_tracker"] = torch.tensor(int(scaler.get("_growth_tracker", 0)), dtype=torch.int64)
    write_safetensors(state, os.path.join(out_dir, "model.safetensors"))
    write_safetensors(optimizer, os.path.join(out_dir, "optimizer.safetensors"))
    cfg = ckpt.get("cfg")
    if isinstance(cfg, str):
        with open(os.path.join(out_dir, "pyslowfast_cfg.yaml"), "w") as f:
            f.write(cfg)
    epoch = ckpt.get("epoch")
    if epoch is not None and not isinstance(epoch, int):
        try:
            epoch = int(epoch)
        except (TypeError, ValueError):
            raise Fail(f"{src}: epoch is {epoch!r}, not an integer")
    print(json.dumps({"epoch": epoch, "tensors": len(state), "momentum": sum(1 for k in optimizer if not k.startswith("amp.")), "notes": notes}))


# --- Caffe2 ---------------------------------------------------------------------------------

# What a pickle of numpy arrays needs: the array and dtype reconstructors (numpy 1 and 2
# spellings), OrderedDict, and the string codec Python 3 writes protocol-2 bytes with; nothing
# that runs other code.
CAFFE2_GLOBALS = {
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
}


def cmd_caffe2(src, out, trust):
    import pickle

    import numpy as np

    class Arrays(pickle.Unpickler):
        def find_class(self, module, name):
            if trust or (module, name) in CAFFE2_GLOBALS:
                return super().find_class(module, name)
            raise Fail(
                f"{src}: the pickle asks for {module}.{name}, which a Caffe2 checkpoint of arrays "
                "does not hold (if you trust the file, --trust-pickle runs the code stored in it)"
            )

    try:
        with open(src, "rb") as f:
            ckpt = Arrays(f, encoding="latin1").load()
    except FileNotFoundError:
        raise Fail(f"{src}: no such file")
    except Fail:
        raise
    except Exception as e:
        raise Fail(f"{src}: not a pickle: {type(e).__name__}: {e}")
    blobs = ckpt.get("blobs", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(blobs, dict):
        raise Fail(f"{src}: not a Caffe2 checkpoint: a {type(ckpt).__name__}, not a dict of blobs")
    state, notes = OrderedDict(), []
    left = []
    for k, v in blobs.items():
        t = None
        if isinstance(v, np.ndarray) and v.dtype.kind in "fiub":
            try:
                t = torch.from_numpy(np.ascontiguousarray(v)).clone()
            except TypeError:
                pass
        if t is None or t.dtype not in NAMES:
            left.append(str(k))
        else:
            state[str(k)] = t
    if left:
        notes.append(f"{len(left)} Caffe2 blobs are not numeric arrays and were left out: {', '.join(sorted(left)[:6])}")
    if not state:
        raise Fail(f"{src}: the Caffe2 checkpoint holds no arrays")
    write_safetensors(state, out)
    print(json.dumps({"epoch": None, "tensors": len(state), "momentum": 0, "notes": notes}))


# --- export ---------------------------------------------------------------------------------


def yaml_scalar(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v:
            return ".nan"
        if v in (float("inf"), float("-inf")):
            return ".inf" if v > 0 else "-.inf"
        r = repr(v)
        # PyYAML (YAML 1.1) reads 1e-05 as a string: give the mantissa a point.
        if "e" in r and "." not in r.split("e")[0]:
            m, e = r.split("e")
            r = f"{m}.0e{e}"
        return r
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(yaml_scalar(x) for x in v) + "]"
    raise Fail(f"cfg value {v!r} cannot be written as YAML")


def yaml_dump(d, indent=0):
    lines = []
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append(" " * indent + f"{k}:")
            lines.extend(yaml_dump(v, indent + 2))
        else:
            lines.append(" " * indent + f"{k}: {yaml_scalar(v)}")
    return lines


def cmd_export(job_path):
    with open(job_path) as f:
        job = json.load(f)
    weights = read_safetensors(job["model"])
    names = pyslowfast_order(weights.keys())
    steps = int(job.get("num_batches_tracked", 0))
    model_state = OrderedDict()
    for n in names:
        model_state[n] = weights[n]
        if n.endswith(".running_var"):
            model_state[n[: -len("running_var")] + "num_batches_tracked"] = torch.tensor(steps, dtype=torch.int64)
    # BN statistics come in pairs in a BatchNorm's state_dict: running_mean then running_var.
    for n in names:
        if n.endswith(".running_mean") and n[: -len("running_mean")] + "running_var" not in weights:
            raise Fail(f"{job['model']}: {n} has no running_var beside it")
    state = read_safetensors(job["optimizer"]) if job.get("optimizer") else OrderedDict()
    params = [n for n in names if not is_buffer(n)]
    s = job["solver"]
    if job.get("norm_type") == "sub_batchnorm":
        # SubBatchNorm3d holds the BN scale and shift itself and is no _NormBase, so
        # construct_optimizer finds no BN parameters: one group, in module order, with
        # SOLVER.WEIGHT_DECAY (the empty BN group is dropped).
        bn, other = [], params
    else:
        bn = [n for n in params if is_bn_param(n)]
        other = [n for n in params if not is_bn_param(n)]
    index = {n: i for i, n in enumerate(bn + other)}
    opt_state = {}
    for name, buf in state.items():
        if name.startswith("amp."):
            continue
        if name not in index:
            raise Fail(f"{job['optimizer']}: momentum for {name}, which is not a parameter of the model")
        opt_state[index[name]] = {"momentum_buffer": buf}
    opt_state = dict(sorted(opt_state.items()))

    def group(members, weight_decay):
        return {
            "lr": float(s["lr"]), "momentum": float(s["momentum"]), "dampening": float(s["dampening"]),
            "weight_decay": float(weight_decay), "nesterov": bool(s["nesterov"]), "maximize": False,
            "foreach": None, "differentiable": False, "fused": None,
            "layer_decay": 1.0, "apply_LARS": False,
            "params": [index[n] for n in members],
        }

    groups = [g for g in [group(bn, s["bn_weight_decay"]), group(other, s["weight_decay"])] if g["params"]]
    ckpt = {
        "epoch": int(job["epoch"]),
        "model_state": model_state,
        "optimizer_state": {"state": opt_state, "param_groups": groups},
        "cfg": "\n".join(yaml_dump(job["cfg"])) + "\n",
    }
    if "amp.loss_scale" in state:
        sc = job["scaler"]
        ckpt["scaler_state"] = {
            "scale": float(state["amp.loss_scale"].item()),
            "growth_factor": float(sc["growth_factor"]),
            "backoff_factor": float(sc["backoff_factor"]),
            "growth_interval": int(sc["growth_interval"]),
            "_growth_tracker": int(state["amp.growth_tracker"].item()) if "amp.growth_tracker" in state else 0,
        }
    out = job["out"]
    tmp = f"{out}.tmp-{os.getpid()}"
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, out)
    except OSError as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise Fail(f"{out}: {e.strerror}")
    print(json.dumps({"tensors": len(model_state), "momentum": len(opt_state), "epoch": ckpt["epoch"]}))


def main(argv):
    try:
        if len(argv) >= 3 and argv[0] == "import":
            extra = argv[3:]
            if any(a != "--trust-pickle" for a in extra):
                raise Fail(f"unknown import option {extra}")
            cmd_import(argv[1], argv[2], "--trust-pickle" in extra)
        elif len(argv) >= 3 and argv[0] == "caffe2":
            extra = argv[3:]
            if any(a != "--trust-pickle" for a in extra):
                raise Fail(f"unknown caffe2 option {extra}")
            cmd_caffe2(argv[1], argv[2], "--trust-pickle" in extra)
        elif len(argv) == 2 and argv[0] == "export":
            cmd_export(argv[1])
        else:
            sys.stderr.write(__doc__)
            return 2
    except Fail as e:
        sys.stderr.write(f"pyth.py: {e}\n")
        return 1
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        sys.stderr.write(f"pyth.py: {type(e).__name__}: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
