"""The Python bindings against the library of this checkout (MULTIGRID_LIB, else target/)."""
import ctypes as C
import importlib
import json
import os
import subprocess
import sys

import pytest

import multigrid as mg

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
KINETICS = os.path.join(ROOT, "configs", "kinetics_slowfast_8x8_r50_multigrid.json")
TINY = {
    "data": {"num_frames": 8, "sampling_rate": 1, "train_jitter_scales": [34, 40],
             "train_crop_size": 32, "test_crop_size": 32, "random_flip": False},
    "train": {"batch_size": 4},
    "solver": {"base_lr": 0.05, "lr_policy": "steps_with_relative_lrs", "lrs": [1, 0.1],
               "steps": [0, 2], "max_epoch": 3},
    "multigrid": {"long_cycle": True, "short_cycle": True,
                  "long_cycle_factors": [[0.5, 0.7071], [1, 1]]},
    "model": {"depth": 18, "width_per_group": 8, "alpha": 2, "num_classes": 12},
    "run": {"device": "cpu", "precise_bn_batches": 1, "test_num_temporal_views": 1,
            "test_num_spatial_crops": 1},
}


def has_torch():
    return "libtorch none" not in mg.version()


def need(module):
    """`module`, imported. Not `pytest.importorskip`: the Python these tests run under (the
    set-up's .venv, see the Makefile) has numpy and torch, so one that cannot import them is
    broken, and a skip would let `make test` pass without the tests that need them."""
    try:
        return importlib.import_module(module)
    except Exception as e:  # ImportError, or a broken wheel's OSError (a missing .so)
        error = e
    # Outside the handler: the message alone, not the import's traceback chained to it.
    pytest.fail(f"{sys.executable} cannot import {module}: {error!r}; `make setup` installs it "
                "into .venv", pytrace=False)


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    lib_dir = os.path.dirname(mg.library_path())
    subprocess.run([os.path.join(lib_dir, "multigrid"), "gen-data", "--clips", "60", "--frames", "16",
                    "--size", "40", "--store", "--no-videos", "--out", str(d)], check=True,
                   capture_output=True)
    return str(d)


def test_version_matches_the_bindings():
    v = mg.version()
    assert v.startswith(f"multigrid {mg.MG_VERSION_MAJOR}.{mg.MG_VERSION_MINOR}.{mg.MG_VERSION_PATCH} ")


def test_ffi_declarations_match_the_header():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_python_ffi.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_schedule_and_plan_give_the_golden_kinetics_numbers():
    with mg.Schedule(KINETICS) as s:
        assert s.num_stages == 13 and s.max_epoch == 358
        first = s.stage(0)
        assert (first["num_frames"], first["crop_size"], first["short_cycle_crops"]) == (8, 158, [112, 158, 158])
        with mg.Plan(s, 240000, world_size=8, rank=0) as p:
            assert p.total_steps == 261582 == len(p)
            st = p.step(0)
            assert (st["batch_size"], st["num_frames"], st["crop_size"], st["bn_groups"]) == (128, 8, 112, 8)
            assert st["lr"] == pytest.approx(0.01)
            idx = p.indices(0)
            assert len(idx) == 128 and len(set(int(i) for i in idx)) == 128
            assert all(0 <= int(i) < 240000 for i in idx)
            with pytest.raises(mg.Error) as e:
                p.step(p.total_steps)
            assert e.value.status == 4 and e.value.name == "MG_STATUS_OUT_OF_RANGE"
            assert "past the end" in str(e.value)


def test_bad_config_names_the_key():
    with pytest.raises(mg.Error) as e:
        mg.Schedule({"data": {"num_framez": 8}})
    assert e.value.name == "MG_STATUS_INVALID_CONFIG"
    assert "num_framez" in str(e.value)


def test_overrides_apply_in_order_and_name_a_bad_one():
    c = mg.apply_overrides(KINETICS, ["SOLVER.BASE_LR=0.4", "run.precision=fp32", "solver.base_lr=0.2"])
    assert c["solver"]["base_lr"] == 0.2 and c["run"]["precision"] == "fp32"
    assert c["multigrid"]["long_cycle"] is True
    with mg.Schedule(c) as s:
        assert s.num_stages == 13
    with pytest.raises(mg.Error) as e:
        mg.apply_overrides(KINETICS, ["run.precision=fp8"])
    assert e.value.name == "MG_STATUS_INVALID_CONFIG"
    assert 'run.precision: must be auto, fp32, bf16 or fp16, got "fp8"' in str(e.value)
    with pytest.raises(mg.Error) as e:
        mg.apply_overrides(KINETICS, ["nosuch.key=1"])
    assert "no config section" in str(e.value)


def test_default_normalization_is_the_configs():
    mean, std = mg.default_normalization()
    assert mean == pytest.approx((0.45,) * 3) and std == pytest.approx((0.225,) * 3)
    assert mg.apply_overrides(KINETICS, [])["data"]["mean"] == pytest.approx(list(mean))


def test_closed_handles_refuse_use():
    s = mg.Schedule(KINETICS)
    s.close()
    s.close()
    with pytest.raises(ValueError):
        s.num_stages


@pytest.mark.parametrize("numpy", [True, False])
def test_collate_explicit_normalises_a_flat_clip(monkeypatch, numpy):
    np = need("numpy")
    if not numpy:
        monkeypatch.setattr(mg, "_np", None)
    clip = np.full((4, 20, 30, 3), 200, dtype=np.uint8)
    src = clip if numpy else (bytes(clip.tobytes()), 4, 20, 30)
    params = [dict(start_frame=0, stride=1, short_side=20, crop_x=5, crop_y=2, flip=False)]
    out = mg.collate_explicit([src], params, num_frames=4, crop_size=16)
    want = (200 / 255 - 0.45) / 0.225
    if numpy:
        assert out.shape == (1, 3, 4, 16, 16) and out.dtype == np.float32
        assert np.allclose(out, want, atol=1e-5)
    else:
        assert isinstance(out, memoryview) and out.shape == (1, 3, 4, 16, 16)
        assert all(abs(v - want) < 1e-5 for v in out.cast("B").cast("f"))


def test_dataset_load_step_follows_the_plan(data):
    need("numpy")  # load_step's arrays (`.size`) are numpy's; memoryviews without it
    with mg.Schedule(TINY) as s, mg.Dataset.store(os.path.join(data, "train.mgstore")) as d, \
            mg.Plan(s, len(d)) as p:
        assert len(d) == 50
        slow, fast, labels, st = d.load_step(p, 0, alpha=2)
        n, t, c = st["batch_size"], st["num_frames"], st["crop_size"]
        assert fast.shape == (n, 3, t, c, c) and slow.shape == (n, 3, t // 2, c, c)
        assert labels.shape == (n,) and all(0 <= int(x) < 12 for x in labels)
        assert mg.collate_step_len(p, 0, 2) == (slow.size, fast.size)
        with pytest.raises(mg.Error):
            d.load_step(p, p.total_steps, alpha=2)


def test_frame_store_serves_the_clip_stores_clips(data, tmp_path):
    """A JPEG frame store built from the clip store opens through the same call and gives the
    same step's clips, labels and shapes, within JPEG's error."""
    lib_dir = os.path.dirname(mg.library_path())
    frames = str(tmp_path / "train.mgframes")
    subprocess.run([os.path.join(lib_dir, "multigrid"), "build-store", "--data", data, "--format", "jpeg",
                    "--quality", "90", "--out", frames], check=True, capture_output=True)
    with mg.Schedule(TINY) as s, mg.Dataset.store(os.path.join(data, "train.mgstore")) as raw, \
            mg.Dataset.store(frames) as jpeg, mg.Plan(s, len(raw)) as p:
        assert len(jpeg) == len(raw) == 50
        _, want, want_labels, _ = raw.load_step(p, 0, alpha=2)
        _, got, labels, _ = jpeg.load_step(p, 0, alpha=2)
        assert list(labels) == list(want_labels)
        def flat(x):  # a numpy array, or a memoryview without numpy
            return x.cast("B").cast("f") if isinstance(x, memoryview) else x.ravel()
        a, b = flat(want), flat(got)
        assert len(a) == len(b)
        levels = sum(abs(x - y) for x, y in zip(a, b)) / len(a) * 0.225 * 255
        # Noisy 40 px frames: about 3 levels of 255 at quality 90 (6 is the Rust tests' bound too).
        assert levels < 6.0, levels


@pytest.fixture(scope="session")
def charades(tmp_path_factory):
    d = tmp_path_factory.mktemp("charades")
    lib_dir = os.path.dirname(mg.library_path())
    subprocess.run([os.path.join(lib_dir, "multigrid"), "gen-data", "--dataset", "charades",
                    "--clips", "20", "--frames", "16", "--size", "40", "--val-fraction", "0.25",
                    "--out", str(d)], check=True, capture_output=True)
    return str(d)


@pytest.mark.skipif(not has_torch(), reason="libmultigrid built without libtorch")
def test_charades_steps_on_multi_hot_targets_and_reports_map(charades, tmp_path):
    numpy = need("numpy")
    cfg = json.loads(json.dumps(TINY))
    cfg["run"]["data_dir"] = charades
    cfg["multigrid"] = {"long_cycle": False, "short_cycle": False}
    cfg["train"]["dataset"] = "charades"
    cfg["data"].update(multi_label=True, ensemble_method="max")
    cfg["model"].update(loss_func="bce_logit", head_act="sigmoid")
    with mg.Schedule(cfg) as s, mg.Dataset.frame_lists("charades", charades, "train") as d, \
            mg.Plan(s, len(d)) as p, mg.Trainer(cfg, str(tmp_path / "run")) as t:
        with pytest.raises(mg.Error) as e:
            d.load_step(p, 0, alpha=2)
        assert "mg_dataset_load_step_targets" in str(e.value)
        slow, fast, targets, st = d.load_step_targets(p, 0, alpha=2, num_classes=12)
        assert targets.shape == (st["batch_size"], 12)
        assert set(numpy.unique(targets)) <= {0.0, 1.0} and targets.sum() > 0
        with pytest.raises(mg.Error) as e:
            t.train_step(slow, fast, numpy.zeros(st["batch_size"], dtype=numpy.int64))
        assert "multi-label" in str(e.value)
        loss = t.train_step_targets(slow, fast, targets)
        assert 0 < loss < 1.5
        acc = t.evaluate("val")
        assert acc["clips"] == 5 and 0 < acc["map"] <= 100
    with pytest.raises(mg.Error) as e:
        mg.Dataset.frame_lists("kinetics", charades, "train")
    assert "charades" in str(e.value)


@pytest.mark.skipif(not has_torch(), reason="libmultigrid built without libtorch")
def test_trainer_takes_explicit_distributed_settings(data, tmp_path):
    cfg = json.loads(json.dumps(TINY))
    cfg["run"]["data_dir"] = data
    with mg.Trainer(cfg, str(tmp_path / "one"), dist={"rank": 0, "world_size": 1}) as t:
        assert t.rank == (0, 1)
    with pytest.raises(ValueError) as e:
        mg.Trainer(cfg, str(tmp_path / "bad"), dist={"ranks": 2})
    assert "ranks" in str(e.value)
    with pytest.raises(mg.Error) as e:
        mg.Trainer(cfg, str(tmp_path / "bad"), dist={"rank": -2})
    assert "mg_dist_options.rank" in str(e.value)
    with pytest.raises(mg.Error) as e:
        mg.Trainer(cfg, str(tmp_path / "bad"), dist={"rank": 3, "world_size": 2})
    assert "rank 3" in str(e.value)
    with pytest.raises(mg.Error) as e:
        mg.Trainer(cfg, str(tmp_path / "bad"), dist={"backend": "gloo"})
    assert "gloo" in str(e.value)


@pytest.mark.skipif(not has_torch(), reason="libmultigrid built without libtorch")
def test_a_single_pathway_model_takes_the_clip_alone(data, tmp_path):
    cfg = json.loads(json.dumps(TINY))
    cfg["run"]["data_dir"] = data
    cfg["model"].update(arch="slow", nonlocal_location=[[[]], [[1]], [[]], [[]]])
    with mg.Schedule(TINY) as two:
        assert two.collate_alpha == 2
    with mg.Schedule(cfg) as s, mg.Dataset.store(os.path.join(data, "train.mgstore")) as d, \
            mg.Plan(s, len(d)) as p, mg.Trainer(cfg, str(tmp_path / "run")) as t:
        assert s.collate_alpha == 0
        slow, fast, labels, st = d.load_step(p, 0, alpha=s.collate_alpha)
        assert slow is None
        loss = t.train_step(None, fast, labels)
        assert loss == loss and loss > 0 and t.next_step == 1
        with pytest.raises(mg.Error) as e:
            t.train_step(fast, fast, labels)
        assert "one pathway" in str(e.value)
        t.save()
    ckpts = sorted(os.listdir(tmp_path / "run" / "checkpoints"))
    with mg.Trainer(cfg, str(tmp_path / "tuned")) as t:
        report = t.init_from(str(tmp_path / "run" / "checkpoints" / ckpts[-1]))
        assert report["loaded"] > 0 and report["skipped"] == [] and t.next_step == 0
        with pytest.raises(mg.Error) as e:
            t.init_from(str(tmp_path / "nowhere.safetensors"))
        assert "nowhere" in str(e.value)


@pytest.mark.skipif(not has_torch(), reason="libmultigrid built without libtorch")
def test_trainer_steps_evaluates_and_cancels(data, tmp_path):
    cfg = json.loads(json.dumps(TINY))
    cfg["run"]["data_dir"] = data
    with mg.Schedule(cfg) as s, mg.Dataset.store(os.path.join(data, "train.mgstore")) as d, \
            mg.Plan(s, len(d)) as p, mg.Trainer(cfg, str(tmp_path / "run")) as t:
        assert t.next_step == 0 and t.last_metrics() is None
        for k in range(3):
            slow, fast, labels, st = d.load_step(p, k, alpha=2)
            loss = t.train_step(slow, fast, labels)  # BN groups and LR from the plan
            assert loss == loss and loss > 0
        assert t.next_step == 3
        acc = t.evaluate("val")
        assert acc["clips"] == 5 and 0 <= acc["top1"] <= 100
        with pytest.raises(mg.Error) as e:
            t.train_step(slow[:1], fast, labels)
        assert "disagree" in str(e.value)

        seen = []
        summary = t.fit(lambda prog: seen.append(prog["step"]) or len(seen) == 2)
        # A stop the callback asked for is a success: the summary says so.
        assert summary["cancelled"] and seen == [3, 4] and summary["steps"] == 5
        assert summary["preempted"] == 0 and "struct_size" not in summary

        class Stop(Exception):
            pass

        def boom(_):
            raise Stop()

        with pytest.raises(Stop):
            t.fit(boom)
        assert t.next_step == 6

        # The callback runs inside fit: a call on its own trainer is refused, which cancels
        # the run (after one more step and a checkpoint) and comes out of fit.
        for call in (lambda: t.next_step, lambda: t.save(), lambda: t.last_metrics(), t.close):
            with pytest.raises(mg.Error) as e:
                t.fit(lambda _: call())
            assert e.value.status == mg.MG_STATUS_BUSY and e.value.name == "MG_STATUS_BUSY"
            assert "inside" in str(e.value) and "fit" in str(e.value), str(e.value)
        assert t.next_step == 10 and t.rank == (0, 1)

        # A preemption notice (what the handler of mg.install_preemption records) stops fit
        # after one step with a checkpoint; the summary names the signal.
        import signal

        mg.request_preemption(signal.SIGUSR1)
        summary = t.fit()
        assert summary["cancelled"] and summary["preempted"] == signal.SIGUSR1
        assert t.next_step == 11


def test_dist_options_default_checks_the_struct_size():
    """mg_dist_options is versioned: the library writes the size the caller gives, refusing
    sizes no mg_dist_options has, and zeroes the bytes past its own struct for a newer header."""
    lib, ffi = mg._L(), mg._ffi
    o = ffi.mg_dist_options()
    o.rank = 7
    for size in (0, 8, C.sizeof(o) - 1, 5000):
        assert lib.mg_dist_options_default(C.byref(o), size) == mg._ffi.MG_STATUS_INVALID_ARGUMENT
        assert "struct_size" in mg._last_error() and "mg_dist_options" in mg._last_error()
    assert o.rank == 7 and o.struct_size == 0, "written on failure"
    assert lib.mg_dist_options_default(C.byref(o), C.sizeof(o)) == mg._ffi.MG_STATUS_OK
    assert (o.struct_size, o.rank, o.world_size, o.timeout_s) == (C.sizeof(o), -1, -1, 0.0)

    class Newer(C.Structure):  # a later header's mg_dist_options, with one more field
        _fields_ = [("known", ffi.mg_dist_options), ("later", C.c_uint64)]

    n = Newer(later=99)
    p = C.cast(C.pointer(n), C.POINTER(ffi.mg_dist_options))
    assert lib.mg_dist_options_default(p, C.sizeof(n)) == mg._ffi.MG_STATUS_OK
    assert (n.known.struct_size, n.known.rank, n.later) == (C.sizeof(n), -1, 0)


def test_summary_dict_keeps_the_fields_the_library_wrote():
    """An older library writes fewer bytes of mg_summary and says so in struct_size: the dict
    leaves out what it did not write instead of showing zeros as values."""
    s = mg._ffi.mg_summary(steps=5, cancelled=True, preempted=10)
    s.struct_size = mg._ffi.mg_summary.cancelled.offset
    d = mg._versioned_dict(s)
    assert d["steps"] == 5 and "cancelled" not in d and "preempted" not in d
    assert "struct_size" not in d
    s.struct_size = C.sizeof(s)
    assert mg._versioned_dict(s)["preempted"] == 10


@pytest.mark.skipif(not has_torch(), reason="libmultigrid built without libtorch")
def test_pytorch_example_trains(data):
    need("torch")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "python", "train_torch.py"), data,
                        "--steps", "3"], capture_output=True, text=True, env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert [x["step"] for x in lines] == [0, 1, 2]
    assert lines[0]["shape"] == [32, 4, 16] and lines[0]["lr"] == pytest.approx(0.2)
    assert all(x["loss"] > 0 for x in lines)


# Buffers are checked in Python before their addresses reach C, which trusts the lengths it is
# given: a buffer shorter than its shape says would be read past its end.

def test_collate_refuses_clips_that_do_not_match_their_shape():
    np = need("numpy")
    params = [dict(start_frame=0, stride=1, short_side=20, crop_x=5, crop_y=2, flip=False)]
    short = bytes(4 * 20 * 30 * 3 - 1)
    cases = [
        ((short, 4, 20, 30), "clips[0]"),                                  # one byte short
        ((bytearray(4 * 20 * 30 * 3 + 3), 4, 20, 30), "clips[0]"),        # longer than its shape
        ((short, 4, 20), "clips[0]"),                                      # not (buffer, T, H, W)
        ((bytes(12), -1, 2, 2), "clips[0]"),                               # negative size
        ((np.zeros(4 * 20 * 30 * 3, np.float32), 4, 20, 30), "clips[0]"),  # not bytes
        (np.zeros((4, 20, 30, 3), np.float32), "clips[0]"),                # float frames
        (np.zeros((20, 30, 3), np.uint8), "clips[0]"),                     # no frame axis
        (np.zeros((4, 20, 30, 4), np.uint8), "clips[0]"),                  # RGBA
        (object(), "clips[0]"),                                            # not a buffer
    ]
    for clip, name in cases:
        with pytest.raises(ValueError) as e:
            mg.collate_explicit([clip], params, num_frames=4, crop_size=16)
        assert name in str(e.value), (clip, str(e.value))
    good = np.full((4, 20, 30, 3), 7, np.uint8)
    with pytest.raises(ValueError) as e:
        mg.collate_explicit([good, (short, 4, 20, 30)], params * 2, num_frames=4, crop_size=16)
    assert "clips[1]" in str(e.value)
    for key, value in (("mean", (0.5, 0.5)), ("std", (0.2,) * 4)):
        with pytest.raises(ValueError) as e:
            mg.collate_explicit([good], params, num_frames=4, crop_size=16, **{key: value})
        assert key in str(e.value)
    # Strided views are copied, not refused: the library reads a contiguous copy.
    wide = np.full((4, 20, 60, 3), 200, np.uint8)[:, :, ::2]
    out = mg.collate_explicit([wide], params, num_frames=4, crop_size=16)
    assert np.allclose(out, (200 / 255 - 0.45) / 0.225, atol=1e-5)


def test_collate_step_refuses_a_short_clip():
    with mg.Schedule(TINY) as s, mg.Plan(s, 50) as p:
        n = p.step(0)["batch_size"]
        clips = [(bytes(16 * 40 * 40 * 3), 16, 40, 40)] * (n - 1) + [(bytes(100), 16, 40, 40)]
        with pytest.raises(ValueError) as e:
            mg.collate_step(p, 0, clips, alpha=2)
        assert f"clips[{n - 1}]" in str(e.value)


@pytest.mark.skipif(not has_torch(), reason="libmultigrid built without libtorch")
def test_train_step_refuses_buffers_shorter_than_their_shapes(data, tmp_path):
    np = need("numpy")
    cfg = json.loads(json.dumps(TINY))
    cfg["run"]["data_dir"] = data
    with mg.Schedule(cfg) as s, mg.Dataset.store(os.path.join(data, "train.mgstore")) as d, \
            mg.Plan(s, len(d)) as p, mg.Trainer(cfg, str(tmp_path / "run")) as t:
        slow, fast, labels, _ = d.load_step(p, 0, alpha=2)
        ss, fs = slow.shape, fast.shape
        cases = [
            (dict(slow=slow.ravel()[:-1], slow_shape=ss), "slow"),
            (dict(fast=fast.ravel()[:-1], fast_shape=fs), "fast"),
            (dict(fast_shape=(fs[0], 3, fs[2] + 1, fs[3], fs[4])), "fast"),
            (dict(slow_shape=(ss[0], 3, ss[2], ss[3])), "slow_shape"),
            (dict(labels=labels[:-1]), "labels"),
            (dict(labels=labels.astype(np.float32)), "labels"),
            (dict(slow=bytes(slow.nbytes - 4), slow_shape=ss), "slow"),
            (dict(slow=bytes(slow.nbytes)), "slow_shape"),  # raw bytes need a shape
            (dict(labels=memoryview(labels)[:-1]), "labels"),
            (dict(labels=memoryview(labels.astype(np.int32))), "labels"),
            (dict(fast=memoryview(fast.astype(np.float64))), "fast"),
            (dict(fast=memoryview(np.repeat(fast, 2, axis=2)[:, :, ::2]), fast_shape=fs), "fast"),
        ]
        for change, name in cases:
            args = dict(slow=slow, fast=fast, labels=labels)
            args.update(change)
            with pytest.raises(ValueError) as e:
                t.train_step(**args)
            assert name in str(e.value), (sorted(change), str(e.value))
        assert t.next_step == 0, "a refused step must not reach the library"
        # The same batch as flat arrays with their shapes, and as raw bytes, is accepted.
        loss = t.train_step(slow.ravel(), fast.ravel(), labels, slow_shape=ss, fast_shape=fs)
        assert loss == loss and loss > 0
        loss = t.train_step(slow.tobytes(), fast.tobytes(), labels.tobytes(), slow_shape=ss, fast_shape=fs)
        assert loss == loss and loss > 0
        assert t.next_step == 2


NO_NUMPY = r"""
import os, sys
sys.modules["numpy"] = None  # `import numpy` raises ImportError, as where it is not installed
sys.path.insert(0, sys.argv[1])
import multigrid as mg
assert mg._np is None
kinetics, data, torch = sys.argv[2], sys.argv[3], sys.argv[4] == "1"

with mg.Schedule(kinetics) as s, mg.Plan(s, 240000, world_size=8) as p:
    idx = p.indices(0)
    assert isinstance(idx, memoryview) and idx.format == "Q" and len(idx) == 128
    assert len(set(idx)) == 128 and all(0 <= i < 240000 for i in idx)

clip = bytes([200]) * (4 * 20 * 30 * 3)
params = [dict(start_frame=0, stride=1, short_side=20, crop_x=5, crop_y=2, flip=True)]
out = mg.collate_explicit([(clip, 4, 20, 30)], params, num_frames=4, crop_size=16)
assert isinstance(out, memoryview) and out.shape == (1, 3, 4, 16, 16) and out.format == "f"
want = (200 / 255 - 0.45) / 0.225
assert all(abs(v - want) < 1e-5 for v in out.cast("B").cast("f"))
for bad in [(clip[:-1], 4, 20, 30), (memoryview(clip)[::2], 4, 20, 15),
            memoryview(clip), bytearray(clip)]:
    try:
        mg.collate_explicit([bad], params, num_frames=4, crop_size=16)
    except ValueError as e:
        assert "clips[0]" in str(e), e
    else:
        raise AssertionError(f"accepted {bad!r:.60}")
# A clip as a shaped uint8 memoryview needs no separate sizes.
shaped = memoryview(bytearray(clip)).cast("B", (4, 20, 30, 3))
again = mg.collate_explicit([shaped], params, num_frames=4, crop_size=16)
assert again.tobytes() == out.tobytes()

cfg = {
    "data": {"num_frames": 8, "sampling_rate": 1, "train_jitter_scales": [34, 40],
             "train_crop_size": 32, "test_crop_size": 32, "random_flip": False},
    "train": {"batch_size": 4},
    "solver": {"base_lr": 0.05, "lr_policy": "steps_with_relative_lrs", "lrs": [1, 0.1],
               "steps": [0, 2], "max_epoch": 3},
    "multigrid": {"long_cycle": True, "short_cycle": True,
                  "long_cycle_factors": [[0.5, 0.7071], [1, 1]]},
    "model": {"depth": 18, "width_per_group": 8, "alpha": 2, "num_classes": 12},
    "run": {"device": "cpu", "precise_bn_batches": 1, "data_dir": data},
}
with mg.Schedule(cfg) as s, mg.Dataset.store(os.path.join(data, "train.mgstore")) as d, \
        mg.Plan(s, len(d)) as p:
    slow, fast, labels, st = d.load_step(p, 0, alpha=2)
    n, t, c = st["batch_size"], st["num_frames"], st["crop_size"]
    assert isinstance(fast, memoryview) and fast.shape == (n, 3, t, c, c) and fast.format == "f"
    assert slow.shape == (n, 3, t // 2, c, c) and labels.format == "q" and len(labels) == n
    if torch:
        with mg.Trainer(cfg, sys.argv[5]) as tr:
            for bad, name in [(dict(labels=labels[:-1]), "labels"),
                              (dict(slow=slow.tobytes()[:-4], slow_shape=slow.shape), "slow"),
                              (dict(fast=fast.cast("B")), "fast")]:
                args = dict(slow=slow, fast=fast, labels=labels)
                args.update(bad)
                try:
                    tr.train_step(**args)
                except ValueError as e:
                    assert name in str(e), e
                else:
                    raise AssertionError(f"train_step accepted {sorted(bad)}")
            loss = tr.train_step(slow, fast, labels)
            assert loss == loss and loss > 0 and tr.next_step == 1
print("no numpy: ok")
"""


def test_the_package_works_without_numpy(data, tmp_path):
    """The memoryview path, in a process where `import numpy` fails as it does where numpy is
    not installed (the in-process tests always have numpy)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(mg.__file__)))
    r = subprocess.run([sys.executable, "-c", NO_NUMPY, package, KINETICS, data,
                        "1" if has_torch() else "0", str(tmp_path / "run")],
                       capture_output=True, text=True, env=dict(os.environ, MULTIGRID_LIB=mg.library_path()))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("no numpy: ok")
