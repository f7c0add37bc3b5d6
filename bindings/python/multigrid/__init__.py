"""Python bindings of libmultigrid through ctypes: no compiler needed.

    import multigrid as mg
    with mg.Schedule(config) as schedule, mg.Plan(schedule, dataset_size=len(ds)) as plan:
        step = plan.step(0)            # shape, LR, BN groups of step 0
        idx = plan.indices(0)          # this rank's dataset indices

The library is found through $MULTIGRID_LIB (a path to libmultigrid.so), next to this package,
in PREFIX/lib after `make install PREFIX=...`, or in the source tree's target/release and
target/debug. Handles close with close() or a
`with` block. Failures raise multigrid.Error with the status and the library's message.
Buffers come back as numpy arrays when numpy is importable, memoryviews otherwise. Buffers
passed in are checked before the library sees them (length against shape, element type,
contiguity): a mismatch raises ValueError naming the argument.
"""
import ctypes as C
import json
import operator
import os
import sys

from . import _ffi
from ._ffi import (  # noqa: F401  (re-exported)
    MG_VERSION_MAJOR,
    MG_VERSION_MINOR,
    MG_VERSION_PATCH,
    MG_STATUS_BUSY,
    MG_STATUS_CANCELLED,
    MG_STATUS_UNSUPPORTED,
)

try:
    import numpy as _np
except ImportError:  # numpy is optional
    _np = None

__all__ = [
    "Error", "version", "library_path", "apply_overrides", "default_normalization",
    "install_preemption", "request_preemption",
    "Schedule", "Plan", "Dataset", "Trainer",
    "collate_explicit", "collate_step", "collate_step_len", "set_num_threads",
]

STATUS_NAMES = {v: k for k, v in vars(_ffi).items() if k.startswith("MG_STATUS_")}


class Error(Exception):
    """A failed call: `status` is the mg_status code, `name` its MG_STATUS_* name."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.name = STATUS_NAMES.get(status, str(status))


def _candidates():
    env = os.environ.get("MULTIGRID_LIB")
    if env:
        yield env
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, "libmultigrid.so")
    root = os.path.dirname(os.path.dirname(os.path.dirname(here)))
    # `make install`: PREFIX/lib/multigrid/python/multigrid beside PREFIX/lib/libmultigrid.so.
    yield os.path.join(root, "libmultigrid.so")
    for profile in ("release", "debug"):
        yield os.path.join(root, "target", profile, "libmultigrid.so")


def library_path():
    """The libmultigrid.so this package loads."""
    for path in _candidates():
        if os.path.exists(path):
            return path
    raise OSError(
        "libmultigrid.so not found: set MULTIGRID_LIB, put it next to the package, or build the "
        "crate (cargo build --release)"
    )


_lib = None


def _L():
    global _lib
    if _lib is None:
        lib = _ffi.bind(C.CDLL(library_path()))
        major = int(lib.mg_version().decode().split()[1].split(".")[0])
        if major != MG_VERSION_MAJOR:
            raise OSError(f"{library_path()} is major version {major}; these bindings are {MG_VERSION_MAJOR}")
        _lib = lib
    return _lib


def _last_error():
    lib = _L()
    n = lib.mg_last_error_message(None, 0)
    buf = C.create_string_buffer(n + 1)
    lib.mg_last_error_message(buf, n + 1)
    return buf.value.decode("utf-8", "replace")


def _check(status):
    if status != _ffi.MG_STATUS_OK:
        msg = _last_error() or _L().mg_status_str(status).decode()
        raise Error(status, msg)


def version():
    """'multigrid X.Y.Z (libtorch ..., CUDA linked|not linked)'."""
    return _L().mg_version().decode()


def _struct_dict(s):
    out = {}
    for name, _ in s._fields_:
        v = getattr(s, name)
        out[name] = list(v) if isinstance(v, C.Array) else v
    return out


def _versioned_dict(s):
    """The fields of a versioned output struct (struct_size first) that the library wrote: an
    older library writes fewer than these declarations have, and says how many bytes."""
    out = {}
    for name, _ in s._fields_[1:]:
        field = getattr(type(s), name)
        if field.offset + field.size <= s.struct_size:
            out[name] = getattr(s, name)
    return out


def _config_text(config):
    if isinstance(config, (dict, list)):
        return json.dumps(config)
    if isinstance(config, os.PathLike) or (isinstance(config, str) and not config.lstrip().startswith("{")):
        with open(config) as f:
            return f.read()
    return config


def apply_overrides(config, sets):
    """`config` (a dict, JSON text or a path) with `SECTION.KEY=VALUE` overrides applied in
    order, as the CLI's --set (keys case-insensitive, VALUE JSON or else a string): a dict with
    every key spelled out. A bad override raises Error naming it."""
    text = _config_text(config).encode()
    items = [s.encode() for s in sets]
    arr = C.cast((C.c_char_p * max(len(items), 1))(*items), C.POINTER(C.POINTER(C.c_char)))
    length = C.c_size_t()
    status = _L().mg_config_apply_overrides(text, arr, len(items), None, 0, C.byref(length))
    if status != _ffi.MG_STATUS_BUFFER_TOO_SMALL:
        _check(status)
    buf = C.create_string_buffer(length.value + 1)
    _check(_L().mg_config_apply_overrides(text, arr, len(items), buf, len(buf), C.byref(length)))
    return json.loads(buf.value.decode())


def install_preemption():
    """SIGTERM and SIGUSR1 become preemption notices, handled in C (a Python signal handler
    would not run during Trainer.fit): fit finishes its step, checkpoints and returns its
    summary with `preempted` set."""
    _check(_L().mg_preemption_install())


def request_preemption(signal):
    """Records `signal` as a preemption notice, as the installed handler does."""
    _L().mg_request_preemption(int(signal))


class _Handle:
    _free = None

    def __init__(self):
        self._h = None

    def close(self):
        if self._h is not None:
            getattr(_L(), self._free)(self._h)
            self._h = None

    def _ptr(self):
        if self._h is None:
            raise ValueError(f"{type(self).__name__} is closed")
        return self._h

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Schedule(_Handle):
    """The multigrid schedule of a config: a dict, JSON text, or a path to a JSON file."""

    _free = "mg_schedule_free"

    def __init__(self, config):
        super().__init__()
        h = C.POINTER(_ffi.mg_schedule)()
        _check(_L().mg_schedule_new(_config_text(config).encode(), C.byref(h)))
        self._h = h

    @property
    def num_stages(self):
        n = C.c_size_t()
        _check(_L().mg_schedule_num_stages(self._ptr(), C.byref(n)))
        return n.value

    def stage(self, index):
        s = _ffi.mg_stage()
        _check(_L().mg_schedule_stage(self._ptr(), index, C.byref(s)))
        return _struct_dict(s)

    def stages(self):
        return [self.stage(i) for i in range(self.num_stages)]

    @property
    def max_epoch(self):
        e = C.c_uint32()
        _check(_L().mg_schedule_max_epoch(self._ptr(), C.byref(e)))
        return e.value

    @property
    def collate_alpha(self):
        """The alpha collation takes for the config's network: model.alpha for SlowFast, 0
        for a single-pathway model.arch (no slow pathway; train_step takes slow=None)."""
        a = C.c_uint32()
        _check(_L().mg_schedule_collate_alpha(self._ptr(), C.byref(a)))
        return a.value

    def lr_at(self, epoch):
        v = C.c_double()
        _check(_L().mg_schedule_lr_at(self._ptr(), float(epoch), C.byref(v)))
        return v.value

    def is_eval_epoch(self, epoch):
        b = C.c_bool()
        _check(_L().mg_schedule_is_eval_epoch(self._ptr(), epoch, C.byref(b)))
        return b.value


class Plan(_Handle):
    """Steps of one rank over a dataset: shape, LR, BN groups and indices of any step."""

    _free = "mg_plan_free"

    def __init__(self, schedule, dataset_size, world_size=1, rank=0, seed=0):
        super().__init__()
        h = C.POINTER(_ffi.mg_plan)()
        _check(_L().mg_plan_new(schedule._ptr(), dataset_size, world_size, rank, seed, C.byref(h)))
        self._h = h
        self._schedule = schedule  # the plan reads the schedule: keep it alive

    @property
    def total_steps(self):
        n = C.c_uint64()
        _check(_L().mg_plan_total_steps(self._ptr(), C.byref(n)))
        return n.value

    def __len__(self):
        return self.total_steps

    def steps_in_epoch(self, epoch):
        n = C.c_uint64()
        _check(_L().mg_plan_steps_in_epoch(self._ptr(), epoch, C.byref(n)))
        return n.value

    def step(self, step):
        """A dict with mg_step's fields: epoch, stage, batch_size, num_frames, crop_size, lr..."""
        s = _ffi.mg_step()
        _check(_L().mg_plan_step(self._ptr(), step, C.byref(s)))
        return _struct_dict(s)

    def indices(self, step):
        """This rank's dataset indices of `step` (uint64)."""
        n = self.step(step)["batch_size"]
        buf = _alloc("Q", (n,))
        length = C.c_size_t()
        _check(_L().mg_plan_step_indices(self._ptr(), step, _addr(buf, C.c_uint64), n, C.byref(length)))
        return buf[: length.value]


# Buffers: numpy arrays when numpy is there, else memoryviews over bytearrays.
_NP = {"f": "float32", "q": "int64", "Q": "uint64", "B": "uint8"}


def _alloc(fmt, shape):
    if _np is not None:
        return _np.empty(shape, dtype=_NP[fmt])
    n = 1
    for d in shape:
        n *= d
    mv = memoryview(bytearray(n * C.sizeof({"f": C.c_float, "q": C.c_int64, "Q": C.c_uint64, "B": C.c_uint8}[fmt])))
    return mv.cast(fmt, shape) if n else mv.cast(fmt)


def _addr(buf, ctype, writable=True):
    """A ctypes pointer into `buf` (numpy array or writable buffer) of element type ctype;
    NULL for None."""
    if buf is None:
        return None
    if _np is not None and isinstance(buf, _np.ndarray):
        if not buf.flags["C_CONTIGUOUS"]:
            raise ValueError("buffer must be C-contiguous")
        return buf.ctypes.data_as(C.POINTER(ctype))
    mv = memoryview(buf)
    if mv.readonly:
        if writable:
            raise ValueError("buffer is read-only")
        mv = memoryview(bytearray(mv.tobytes()))
    if not mv.c_contiguous:
        raise ValueError("buffer must be C-contiguous")
    arr = (C.c_char * mv.nbytes).from_buffer(mv.cast("B"))
    return C.cast(arr, C.POINTER(ctype))


# What the library reads through a pointer, it reads for the length the shape gives: every buffer
# is checked here, naming the argument, before its address goes to C.
_ITEMSIZE = {"f": 4, "q": 8, "Q": 8, "B": 1}
# Buffer-protocol formats that are the element type itself ("l" is numpy's int64 on LP64).
_SAME = {"f": {"f"}, "q": {"q"}, "Q": {"Q"}, "B": {"B"}}
if C.sizeof(C.c_long) == 8:
    _SAME["q"].add("l")
    _SAME["Q"].add("L")
# Untyped bytes: taken for any element type when a shape says how many elements they hold.
_RAW = {"B", "b", "c"}


def _shape(value, name, ndim=None):
    """`value` as a tuple of non-negative ints, or ValueError naming `name`."""
    try:
        shape = tuple(operator.index(d) for d in value)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of integers, got {value!r}") from None
    if ndim is not None and len(shape) != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got {shape}")
    if any(d < 0 for d in shape):
        raise ValueError(f"{name} {shape} has a negative size")
    return shape


def _count(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def _input(buf, name, fmt, shape=None, shape_name=None, casting="same_kind"):
    """Checks a buffer the library will read as `fmt` elements in `shape` (default: the
    buffer's own shape) and returns (buffer to pass to _addr, shape). numpy arrays (and, with
    numpy, sequences) are converted to the element type when numpy casts it with `casting`, and
    copied when not C-contiguous. Other buffers (bytes, bytearray, memoryview, array.array,
    ctypes arrays) are used as they are: their format must be the element type, or untyped
    bytes with a shape, and C-contiguous. Either way the element count must equal the shape's."""
    want = _NP[fmt]
    if _np is not None and not isinstance(buf, (bytes, bytearray, memoryview)):
        try:
            arr = buf if isinstance(buf, _np.ndarray) else _np.asarray(buf)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} is not an array or a buffer: {e}") from None
        if arr.dtype != want and not _np.can_cast(arr.dtype, want, casting):
            raise ValueError(f"{name} has dtype {arr.dtype}; expected {want}")
        arr = _np.ascontiguousarray(arr, dtype=want)
        if shape is None:
            shape = arr.shape
        if arr.size != _count(shape):
            raise ValueError(f"{name} holds {arr.size} values; shape {tuple(shape)} needs {_count(shape)}")
        return arr, tuple(shape)
    try:
        mv = memoryview(buf)
    except TypeError:
        raise ValueError(f"{name} must be a {want} array or buffer, got {type(buf).__name__}") from None
    form = mv.format.lstrip("@=" + ("<" if sys.byteorder == "little" else ">!"))
    typed = form in _SAME[fmt]
    if not typed and form not in _RAW:
        raise ValueError(f"{name} has element format {mv.format!r}; expected {want}")
    if shape is None:
        if not typed:
            raise ValueError(f"{name} is untyped bytes: give its shape" + (f" ({shape_name})" if shape_name else ""))
        shape = mv.shape
    if not mv.c_contiguous:
        raise ValueError(f"{name} is not C-contiguous")
    need = _count(shape) * _ITEMSIZE[fmt]
    if mv.nbytes != need:
        raise ValueError(f"{name} holds {mv.nbytes} bytes; shape {tuple(shape)} of {want} needs {need}")
    return mv, tuple(shape)


def _triple(value, name):
    try:
        values = [float(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be 3 numbers (R, G, B), got {value!r}") from None
    if len(values) != 3:
        raise ValueError(f"{name} must be 3 numbers (R, G, B), got {len(values)}")
    return (C.c_float * 3)(*values)


def _nelems(buf):
    if _np is not None and isinstance(buf, _np.ndarray):
        return buf.size
    mv = memoryview(buf)
    return mv.nbytes // mv.itemsize


def collate_step_len(plan, step, alpha):
    """(slow, fast) float counts of step's pathway buffers; slow is 0 for alpha 0."""
    s, f = C.c_size_t(), C.c_size_t()
    _check(_L().mg_collate_step_len(plan._ptr(), step, alpha, C.byref(s), C.byref(f)))
    return s.value, f.value


def _clips(clips):
    """mg_clip array from uint8 arrays [T, H, W, 3] (or (buffer, T, H, W) tuples)."""
    arr = (_ffi.mg_clip * len(clips))()
    keep = []
    for i, c in enumerate(clips):
        name = f"clips[{i}]"
        if isinstance(c, tuple):
            if len(c) != 4:
                raise ValueError(f"{name} is a tuple of {len(c)}; expected (buffer, T, H, W)")
            sizes = _shape(c[1:], f"{name}'s (T, H, W)")
            if any(d > 0xFFFFFFFF for d in sizes):
                raise ValueError(f"{name}'s (T, H, W) {sizes} do not fit in uint32")
            buf, shape = _input(c[0], name, "B", sizes + (3,), casting="safe")
        else:
            buf, shape = _input(c, name, "B", casting="safe")
            if len(shape) != 4 or shape[3] != 3 or any(d > 0xFFFFFFFF for d in shape):
                raise ValueError(f"{name} has shape {shape}; expected [T, H, W, 3] uint8")
        t, h, w = shape[:3]
        keep.append(buf)
        arr[i] = _ffi.mg_clip(_addr(buf, C.c_uint8, writable=False), t, h, w)
    return arr, keep


def default_normalization():
    """PySlowFast's DATA.MEAN and DATA.STD, the config's defaults: (mean, std), 3 floats each."""
    mean, std = (C.c_float * 3)(), (C.c_float * 3)()
    _check(_L().mg_default_normalization(mean, std))
    return tuple(mean), tuple(std)


def collate_explicit(clips, params, num_frames, crop_size, mean=None, std=None):
    """Collates clips with explicit parameters (dicts with start_frame, stride, short_side,
    crop_x, crop_y, flip) into a float32 [N, 3, T, S, S] batch. `mean` and `std` default to
    default_normalization()'s."""
    if mean is None or std is None:
        default_mean, default_std = default_normalization()
        mean = default_mean if mean is None else mean
        std = default_std if std is None else std
    if len(clips) != len(params):
        raise ValueError(f"{len(clips)} clips but {len(params)} parameter sets")
    carr, keep = _clips(clips)
    parr = (_ffi.mg_clip_params * len(params))(*[_ffi.mg_clip_params(**p) for p in params])
    out = _alloc("f", (len(clips), 3, num_frames, crop_size, crop_size))
    m, s = _triple(mean, "mean"), _triple(std, "std")
    _check(_L().mg_collate_explicit(carr, parr, len(clips), num_frames, crop_size, m, s,
                                    _addr(out, C.c_float), _nelems(out)))
    del keep
    return out


def _step_buffers(plan, step, alpha):
    st = plan.step(step)
    n, t, s = st["batch_size"], st["num_frames"], st["crop_size"]
    slow_len, _ = collate_step_len(plan, step, alpha)
    ts = slow_len // (3 * n * s * s) if slow_len else 0
    slow = _alloc("f", (n, 3, ts, s, s)) if slow_len else _alloc("f", (0,))
    fast = _alloc("f", (n, 3, t, s, s))
    return st, slow, fast


def collate_step(plan, step, clips, alpha):
    """Collates the decoded clips of a plan step with the plan's seeded augmentation:
    (slow or None, fast)."""
    _, slow, fast = _step_buffers(plan, step, alpha)
    carr, keep = _clips(clips)
    _check(_L().mg_collate_step(plan._ptr(), step, carr, len(clips), alpha,
                                _addr(slow, C.c_float), _nelems(slow), _addr(fast, C.c_float), _nelems(fast)))
    del keep
    return (slow if alpha else None), fast


def set_num_threads(n):
    """Collation threads; 0 means one per core."""
    _check(_L().mg_collate_set_num_threads(n))


class Dataset(_Handle):
    """A clip store (Dataset.store), a PySlowFast video list (Dataset.video_list), or Charades'
    or SSv2's frame lists (Dataset.frame_lists)."""

    _free = "mg_dataset_free"

    def __init__(self, handle):
        super().__init__()
        self._h = handle

    @classmethod
    def store(cls, path):
        """A clip store (.mgstore, decoded frames) or a frame store (.mgframes, JPEG frames)."""
        h = C.POINTER(_ffi.mg_dataset)()
        _check(_L().mg_dataset_open_store(os.fsencode(path), C.byref(h)))
        return cls(h)

    @classmethod
    def video_list(cls, directory, split):
        h = C.POINTER(_ffi.mg_dataset)()
        _check(_L().mg_dataset_open_video_list(os.fsencode(directory), split.encode(), C.byref(h)))
        return cls(h)

    @classmethod
    def frame_lists(cls, dataset, directory, split, path_prefix=None):
        """`dataset` "charades" or "ssv2" in PySlowFast's layout (train.csv, val.csv, and SSv2's
        label JSON files); val and test both read val.csv."""
        h = C.POINTER(_ffi.mg_dataset)()
        prefix = None if path_prefix is None else os.fsencode(path_prefix)
        _check(_L().mg_dataset_open_frame_lists(
            dataset.encode(), os.fsencode(directory), split.encode(), prefix, C.byref(h)))
        return cls(h)

    def __len__(self):
        n = C.c_uint64()
        _check(_L().mg_dataset_len(self._ptr(), C.byref(n)))
        return n.value

    def load_step(self, plan, step, alpha):
        """Decodes and collates plan step `step`: (slow or None, fast, labels, step dict)."""
        st, slow, fast = _step_buffers(plan, step, alpha)
        labels = _alloc("q", (st["batch_size"],))
        _check(_L().mg_dataset_load_step(
            self._ptr(), plan._ptr(), step, alpha, _addr(slow, C.c_float), _nelems(slow),
            _addr(fast, C.c_float), _nelems(fast), _addr(labels, C.c_int64), _nelems(labels)))
        return (slow if alpha else None), fast, labels, st

    def load_step_targets(self, plan, step, alpha, num_classes):
        """load_step for a multi-label plan (data.multi_label): (slow or None, fast, targets,
        step dict) with float32 multi-hot targets [N, num_classes] (model.num_classes)."""
        st, slow, fast = _step_buffers(plan, step, alpha)
        targets = _alloc("f", (st["batch_size"], num_classes))
        _check(_L().mg_dataset_load_step_targets(
            self._ptr(), plan._ptr(), step, alpha, _addr(slow, C.c_float), _nelems(slow),
            _addr(fast, C.c_float), _nelems(fast), _addr(targets, C.c_float), _nelems(targets)))
        return (slow if alpha else None), fast, targets, st


def _pathways(slow, fast, slow_shape, fast_shape):
    """The two pathways of a host step, checked: (slow, its shape, fast, its shape); slow
    None (a single-pathway network) gives (None, None, ...), passed to C as NULL."""
    fs = None if fast_shape is None else _shape(fast_shape, "fast_shape", 5)
    fast, fs = _input(fast, "fast", "f", fs, "fast_shape")
    if slow is None and slow_shape is None:
        if len(fs) != 5:
            raise ValueError(f"fast has shape {fs}; expected [N, 3, T, H, W] (or give fast_shape)")
        return None, None, fast, fs
    ss = None if slow_shape is None else _shape(slow_shape, "slow_shape", 5)
    slow, ss = _input(slow, "slow", "f", ss, "slow_shape")
    for name, shape in (("slow", ss), ("fast", fs)):
        if len(shape) != 5:
            raise ValueError(f"{name} has shape {shape}; expected [N, 3, T, H, W] (or give {name}_shape)")
    return slow, ss, fast, fs


class Trainer(_Handle):
    """The config's network (model.arch) on libtorch over a whole multigrid schedule (CUDA when
    present)."""

    _free = "mg_trainer_free"

    def __init__(self, config, output_dir, dist=None):
        """`dist`: None (the config's run section and the launcher's environment: torchrun,
        mpirun, srun), or a dict with any of backend, init_method, rank, world_size,
        local_rank, local_world_size, timeout_s (mg_dist_options)."""
        super().__init__()
        h = C.POINTER(_ffi.mg_trainer)()
        if dist is None:
            _check(_L().mg_trainer_new(_config_text(config).encode(), os.fsencode(output_dir), C.byref(h)))
        else:
            o = _ffi.mg_dist_options()
            _check(_L().mg_dist_options_default(C.byref(o), C.sizeof(o)))
            known = {name for name, _ in o._fields_} - {"struct_size"}
            unknown = set(dist) - known
            if unknown:
                raise ValueError(f"unknown distributed settings {sorted(unknown)}; known: {sorted(known)}")
            keep = []  # the encoded strings must outlive the call
            for key, value in dist.items():
                if key in ("backend", "init_method"):
                    keep.append(str(value).encode())
                    setattr(o, key, keep[-1])
                else:
                    setattr(o, key, value)
            _check(_L().mg_trainer_new_dist(_config_text(config).encode(), os.fsencode(output_dir),
                                            C.byref(o), C.byref(h)))
        self._h = h

    @property
    def rank(self):
        """(rank, world_size) of this process."""
        r, w = C.c_uint32(), C.c_uint32()
        _check(_L().mg_trainer_rank(self._ptr(), C.byref(r), C.byref(w)))
        return r.value, w.value

    def resume(self):
        """Loads the newest checkpoint in the output directory; False when there is none."""
        b = C.c_bool()
        _check(_L().mg_trainer_resume(self._ptr(), C.byref(b)))
        return b.value

    @property
    def next_step(self):
        s = C.c_uint64()
        _check(_L().mg_trainer_next_step(self._ptr(), C.byref(s)))
        return s.value

    def fit(self, progress=None):
        """Trains to the end of the plan. `progress(dict)` returning True cancels after a
        checkpoint; an exception it raises cancels too and is re-raised here. Returns the
        summary dict: `cancelled` when the run stopped early (by `progress`, or a preemption
        notice: `preempted` is then its signal number, else 0). `progress` must not use this
        trainer: such a call raises Error (MG_STATUS_BUSY), which cancels the run."""
        error = []

        def trampoline(_user, p):
            try:
                return 1 if progress(_struct_dict(p.contents)) else 0
            except BaseException as e:  # noqa: B902 - re-raised after the C call returns
                error.append(e)
                return 1

        cb = _ffi.mg_progress_fn(trampoline) if progress else _ffi.mg_progress_fn()
        s = _ffi.mg_summary()
        s.struct_size = C.sizeof(s)
        self._fitting = True
        try:
            status = _L().mg_trainer_fit(self._ptr(), cb, None, C.byref(s))
        finally:
            self._fitting = False
        if error:
            raise error[0]
        _check(status)
        return _versioned_dict(s)

    def _refuse_inside_fit(self, what):
        # For the calls whose C function cannot say MG_STATUS_BUSY in its return value:
        # mg_trainer_free (void; this object would forget a handle that was not freed) and
        # mg_trainer_last_metrics (0, as when nothing was logged).
        if getattr(self, "_fitting", False):
            raise Error(MG_STATUS_BUSY, f"Trainer.{what}: called inside this trainer's fit (from "
                        "its progress callback); call it after fit returns")

    def close(self):
        self._refuse_inside_fit("close")
        super().close()

    def train_step(self, slow, fast, labels, bn_groups=0, lr=-1.0, slow_shape=None, fast_shape=None):
        """One SGD step on host arrays (float32 [N, 3, T, S, S], int64 [N]); bn_groups 0 and
        lr < 0 take the plan's values. Shapes come from the arrays (numpy arrays, shaped
        memoryviews) or are given, for flat arrays and raw bytes. Each buffer must hold exactly
        its shape's elements (ValueError otherwise)."""
        slow, ss, fast, fs = _pathways(slow, fast, slow_shape, fast_shape)
        labels, _ = _input(labels, "labels", "q", (fs[0],))
        loss = C.c_double()
        _check(_L().mg_trainer_train_step(
            self._ptr(), _addr(slow, C.c_float, False), None if ss is None else (C.c_int64 * 5)(*ss),
            _addr(fast, C.c_float, False), (C.c_int64 * 5)(*fs), _addr(labels, C.c_int64, False),
            bn_groups, float(lr), C.byref(loss)))
        return loss.value

    def train_step_targets(self, slow, fast, targets, bn_groups=0, lr=-1.0, slow_shape=None,
                           fast_shape=None):
        """train_step for a multi-label task: `targets` float32 [N, num_classes] in [0, 1];
        returns the binary cross-entropy on the logits."""
        slow, ss, fast, fs = _pathways(slow, fast, slow_shape, fast_shape)
        targets, ts = _input(targets, "targets", "f")
        if len(ts) != 2 or ts[0] != fs[0]:
            raise ValueError(f"targets has shape {tuple(ts)}; expected [{fs[0]}, num_classes]")
        loss = C.c_double()
        _check(_L().mg_trainer_train_step_targets(
            self._ptr(), _addr(slow, C.c_float, False), None if ss is None else (C.c_int64 * 5)(*ss),
            _addr(fast, C.c_float, False), (C.c_int64 * 5)(*fs), _addr(targets, C.c_float, False),
            ts[1], bn_groups, float(lr), C.byref(loss)))
        return loss.value

    def evaluate(self, split="val"):
        a = _ffi.mg_accuracy()
        _check(_L().mg_trainer_evaluate(self._ptr(), split.encode(), C.byref(a)))
        return _struct_dict(a)

    def save(self):
        _check(_L().mg_trainer_save(self._ptr()))

    def init_from(self, path, skip_missing=False):
        """Initialises the model from another run's weights (ours, a PySlowFast .pyth or Caffe2
        .pkl, a torchvision 2D ResNet .pth/.safetensors, inflated), as mg_trainer_init_from;
        returns what was loaded (mg_trainer_init_report) as a dict. skip_missing: list what
        does not map instead of failing."""
        self._refuse_inside_fit("init_from")
        flags = _ffi.MG_INIT_SKIP_MISSING if skip_missing else 0
        _check(_L().mg_trainer_init_from(self._ptr(), os.fsencode(path), flags))
        n = _L().mg_trainer_init_report(self._ptr(), None, 0)
        buf = C.create_string_buffer(n + 1)
        _L().mg_trainer_init_report(self._ptr(), buf, n + 1)
        return json.loads(buf.value.decode())

    def load(self, checkpoint_dir):
        _check(_L().mg_trainer_load(self._ptr(), os.fsencode(checkpoint_dir)))

    def last_metrics(self):
        """The last metrics line as a dict; None when nothing was logged."""
        self._refuse_inside_fit("last_metrics")
        n = _L().mg_trainer_last_metrics(self._ptr(), None, 0)
        if n == 0:
            return None
        buf = C.create_string_buffer(n + 1)
        _L().mg_trainer_last_metrics(self._ptr(), buf, n + 1)
        return json.loads(buf.value.decode())
