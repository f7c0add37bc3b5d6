//! The trainer end to end on a tiny SlowFast: a multigrid run killed with SIGKILL and resumed
//! ends with exactly the parameters of an uninterrupted run.
#![cfg(feature = "torch")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Held by every test here that trains in this process: a trainer seeds libtorch's global
/// generator and draws from it (initial weights, dropout), so two at once would draw each
/// other's numbers and runs that must be equal would not be.
static IN_PROCESS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn in_process() -> std::sync::MutexGuard<'static, ()> {
    IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner())
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_multigrid"))
}

/// `multigrid train` of `config` into `out` with `--set` overrides, in its own process; it
/// must succeed.
fn train_ok(config: &Path, out: &Path, sets: &[&str]) {
    let mut cmd = bin();
    cmd.arg("train")
        .arg("--config")
        .arg(config)
        .arg("--output-dir")
        .arg(out);
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn setup() -> (PathBuf, PathBuf) {
    setup_in("train_resume", 100, 3)
}

fn setup_in(name: &str, clips: u32, max_epoch: u32) -> (PathBuf, PathBuf) {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("data");
    common::gen_store(&data, clips);
    let config = serde_json::json!({
        "data": {"num_frames": 8, "sampling_rate": 1, "train_jitter_scales": [34, 40], "train_crop_size": 32, "test_crop_size": 32},
        "train": {"batch_size": 2, "checkpoint_period": 1},
        "solver": {"base_lr": 0.02, "lr_policy": "steps_with_relative_lrs", "lrs": [1, 0.1], "steps": [0, 2], "max_epoch": max_epoch},
        "multigrid": {"long_cycle": true, "short_cycle": true, "long_cycle_factors": [[0.5, std::f64::consts::FRAC_1_SQRT_2], [1, 1]]},
        "model": {"depth": 18, "width_per_group": 8, "alpha": 2, "num_classes": 12, "dropout_rate": 0.3},
        "run": {"device": "cpu", "data_dir": data, "precise_bn_batches": 2, "test_num_temporal_views": 1,
                "test_num_spatial_crops": 1, "keep_checkpoints": 100, "log_period": 1}
    });
    let path = root.join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    (root, path)
}

fn final_params(run: &Path) -> Vec<(String, tch::Tensor)> {
    let ckpts = multigrid::train::checkpoint::list(&run.join("checkpoints")).unwrap();
    let (_, last) = ckpts.last().unwrap();
    let mut v = tch::Tensor::read_safetensors(last.join("model.safetensors")).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn sigkill_and_resume_equals_an_uninterrupted_run() {
    let (root, config) = setup();
    let clean = root.join("clean");
    train_ok(&config, &clean, &[]);
    let summary = std::fs::read_to_string(clean.join("metrics.jsonl")).unwrap();
    let total_steps = summary
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "summary")
        .and_then(|v| v["steps"].as_u64())
        .unwrap();
    assert!(total_steps > 10, "{total_steps} steps");

    // Kill a second run as soon as it has written a checkpoint part-way.
    let killed = root.join("killed");
    let mut child = bin()
        .arg("train")
        .arg("--config")
        .arg(&config)
        .arg("--output-dir")
        .arg(&killed)
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let ck = multigrid::train::checkpoint::list(&killed.join("checkpoints")).unwrap();
        if ck.iter().any(|(s, _)| *s > 0 && *s < total_steps) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = multigrid::train::checkpoint::list(&killed.join("checkpoints")).unwrap();
    assert!(
        before.last().unwrap().0 < total_steps,
        "killed after the end"
    );

    let out = bin()
        .arg("train")
        .arg("--config")
        .arg(&config)
        .arg("--output-dir")
        .arg(&killed)
        .arg("--resume")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("resumed at step"));

    let (a, b) = (final_params(&clean), final_params(&killed));
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs after resume");
    }
}

fn fit(config: &Path, out: &Path, patch: serde_json::Value) -> multigrid::train::Trainer {
    let mut c = multigrid::Config::from_file(config).unwrap();
    let mut v = serde_json::to_value(&c).unwrap();
    for (k, val) in patch.as_object().unwrap() {
        v["run"][k] = val.clone();
    }
    c = serde_json::from_value(v).unwrap();
    let mut t = multigrid::train::Trainer::new(c, out).unwrap();
    let s = t.fit(&mut |_| false).unwrap();
    assert!(!s.cancelled);
    t
}

fn params(t: &multigrid::train::Trainer) -> Vec<(String, tch::Tensor)> {
    let mut v: Vec<_> = t.var_store().variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The warm-up pass visits every planned shape and leaves no trace in the trained model.
#[test]
fn warm_up_changes_nothing() {
    let _rng = in_process();
    let (root, config) = setup_in("train_warmup", 40, 3);
    let plain = fit(
        &config,
        &root.join("plain"),
        serde_json::json!({"warmup_shapes": false}),
    );
    let warm = fit(
        &config,
        &root.join("warm"),
        serde_json::json!({"warmup_shapes": true}),
    );
    let shapes = plain.plan().shapes_from(0);
    assert!(shapes.len() > 2, "{shapes:?}");
    let log = std::fs::read_to_string(root.join("warm/metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "warmup");
    assert_eq!(first["shapes"].as_u64(), Some(shapes.len() as u64));
    let (a, b) = (params(&plain), params(&warm));
    assert_eq!(a.len(), b.len());
    for ((na, ta), (_, tb)) in a.iter().zip(&b) {
        assert!(ta.equal(tb), "{na} differs after a warm-up");
    }

    // Autocast is for CUDA; on the CPU it is refused with a message that says so.
    let mut c = multigrid::Config::from_file(&config).unwrap();
    c.run.precision = multigrid::schedule::PrecisionChoice::Bf16;
    let err = multigrid::train::Trainer::new(c, &root.join("bf16"))
        .err()
        .expect("bf16 on the CPU was accepted")
        .to_string();
    assert!(err.contains("needs a CUDA device"), "{err}");
}

/// A val split that exists but cannot be read stops the run with an error naming it, instead of
/// being skipped as if absent.
#[test]
fn a_corrupt_val_split_is_reported() {
    let _rng = in_process();
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("train_corrupt_val");
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("data");
    common::gen_store(&data, 8);
    std::fs::write(data.join("val.mgstore"), b"not a clip store at all").unwrap();
    // One epoch of four steps, no cycles: the failure is at the end-of-run evaluation.
    let config = serde_json::json!({
        "data": {"num_frames": 8, "sampling_rate": 1, "train_jitter_scales": [34, 40], "train_crop_size": 32, "test_crop_size": 32},
        "train": {"batch_size": 2},
        "solver": {"base_lr": 0.02, "lrs": [1], "steps": [0], "max_epoch": 1},
        "model": {"depth": 18, "width_per_group": 8, "alpha": 2, "num_classes": 12},
        "run": {"device": "cpu", "data_dir": data, "precise_bn_batches": 1}
    });
    let c: multigrid::Config = serde_json::from_value(config).unwrap();
    let mut t = multigrid::train::Trainer::new(c, &root.join("out")).unwrap();
    let e = t.fit(&mut |_| false).unwrap_err();
    assert!(matches!(e, multigrid::Error::Decode { .. }), "{e:?}");
    assert!(e.to_string().contains("val.mgstore"), "{e}");
    assert_eq!(t.next_step(), 4, "the run trained before it evaluated");
}

/// run.memory_format channels_last_3d trains the same model as the default layout, to float
/// rounding, and its checkpoints are written (safetensors takes contiguous tensors only).
#[test]
fn channels_last_training_matches_the_default_layout() {
    let (root, config) = setup_in("train_channels_last", 24, 3);
    // Separate processes: the seed that initialises a model is global, and other tests'
    // threads draw from it.
    for (dir, format) in [("plain", "contiguous"), ("cl", "channels_last_3d")] {
        train_ok(
            &config,
            &root.join(dir),
            &[&format!("run.memory_format={format}")],
        );
    }
    let (a, b) = (
        final_params(&root.join("plain")),
        final_params(&root.join("cl")),
    );
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let scale = ta.abs().max().double_value(&[]);
        let diff = (ta - tb).abs().max().double_value(&[]);
        assert!(
            diff <= 1e-3 * scale + 1e-5,
            "{na}: {diff} apart (scale {scale})"
        );
    }
}

/// A checkpoint lists a CRC32 of each of its files; on resume, a newest checkpoint whose model
/// file was truncated (a crash while copying, a full disk) is passed over for the one before,
/// with a warning naming both, and the run goes on from there; with no usable checkpoint left
/// the resume is an error, not a silent start from scratch.
#[test]
fn a_damaged_newest_checkpoint_falls_back_to_the_previous_one() {
    let (root, config) = setup_in("train_damaged_checkpoint", 40, 3);
    let run = root.join("run");
    train_ok(&config, &run, &["solver.max_epoch=3"]);
    let ckpts = multigrid::train::checkpoint::list(&run.join("checkpoints")).unwrap();
    assert!(ckpts.len() >= 2, "{ckpts:?}");
    let (newest, previous) = (&ckpts[ckpts.len() - 1].1, &ckpts[ckpts.len() - 2]);
    let m = multigrid::train::checkpoint::verify(newest).unwrap();
    assert!(
        m.checksums.contains_key("model.safetensors"),
        "{:?}",
        m.checksums
    );
    let model = newest.join("model.safetensors");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    let e = multigrid::train::checkpoint::verify(newest)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("checksum"),
        "{e}"
    );
    let resume = || {
        let out = bin()
            .args(["train", "--resume", "--config"])
            .arg(&config)
            .arg("--output-dir")
            .arg(&run)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (success, text) = resume();
    assert!(success, "{text}");
    assert!(
        text.contains("is unusable") && text.contains(&previous.1.display().to_string()),
        "{text}"
    );
    assert!(
        text.contains(&format!("resumed at step {}", previous.0)),
        "{text}"
    );
    // Every checkpoint damaged: an error naming the newest.
    for (_, dir) in multigrid::train::checkpoint::list(&run.join("checkpoints")).unwrap() {
        let model = dir.join("model.safetensors");
        let bytes = std::fs::read(&model).unwrap();
        std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    }
    let (success, text) = resume();
    assert!(!success, "{text}");
    assert!(text.contains("no usable checkpoint"), "{text}");
}

/// `run.cuda_graphs` on a machine without CUDA says why it cannot capture and trains exactly as
/// without it; `run.cudnn_benchmark = "auto"` is accepted and changes nothing on the CPU.
#[test]
fn cuda_graphs_without_cuda_say_why_and_change_nothing() {
    let _rng = in_process();
    let (root, config) = setup_in("train_graphs", 40, 3);
    let plain = fit(&config, &root.join("plain"), serde_json::json!({}));
    let asked = fit(
        &config,
        &root.join("graphs"),
        serde_json::json!({"cuda_graphs": true, "cudnn_benchmark": "auto"}),
    );
    let (captured, why) = asked.cuda_graphs();
    assert_eq!(captured, 0);
    let why = why.expect("no reason given");
    assert!(why.contains("needs a CUDA device"), "{why}");
    assert_eq!(plain.cuda_graphs(), (0, None), "not asked, nothing to say");
    let (a, b) = (params(&plain), params(&asked));
    for ((na, ta), (_, tb)) in a.iter().zip(&b) {
        assert!(ta.equal(tb), "{na} differs");
    }
}

/// `model.arch` i3d with non-local blocks (PySlowFast's I3D-NL, depth 18 here) trains a whole
/// multigrid run through the trainer, as SlowFast does: one pathway (the loader packs no slow
/// pathway for it), the long cycle's shapes and short cycles, precise BN, val and test; its
/// checkpoints hold PySlowFast's single-pathway names; and a clip batch through
/// `train_step` with an empty slow input steps it.
#[test]
fn i3d_nl_trains_a_multigrid_run_end_to_end() {
    let _rng = in_process();
    let (root, config) = setup_in("train_i3d_nl", 24, 3);
    let mut c = multigrid::Config::from_file(&config).unwrap();
    let mut v = serde_json::to_value(&c).unwrap();
    v["model"]["arch"] = "i3d".into();
    // res3 only: the 22-pixel crops of the long cycle leave res4 a 2x2 map, which the
    // non-local block's [1, 2, 2] pool halves to nothing (the model says so, as tested below).
    v["model"]["nonlocal_location"] = serde_json::json!([[[]], [[1]], [[]], [[]]]);
    v["model"]["nonlocal_instantiation"] = "softmax".into();
    c = serde_json::from_value(v).unwrap();
    assert_eq!(c.model.collate_alpha(), 0);
    let run = root.join("run");
    let mut t = multigrid::train::Trainer::new(c, &run).unwrap();
    let s = t.fit(&mut |_| false).unwrap();
    assert!(!s.cancelled && s.steps == t.plan().total_steps(), "{s:?}");
    assert!(s.final_val.is_some() && s.test.is_some(), "{s:?}");
    let names: Vec<String> = t.var_store().variables().into_keys().collect();
    assert!(names
        .iter()
        .any(|n| n == "s3.pathway0_nonlocal1.conv_theta.weight"));
    assert!(names.iter().all(|n| !n.contains("pathway1")), "{names:?}");
    let saved = final_params(&run);
    assert_eq!(saved.len(), names.len());
    // A host batch: the clip alone, the slow input empty.
    let fast = tch::Tensor::randn([2, 3, 8, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
    let slow = tch::Tensor::zeros([2, 3, 0, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
    let labels = tch::Tensor::from_slice(&[0i64, 1]);
    let step = t.next_step();
    let loss = t.train_step(&slow, &fast, &labels, 1, 0.01, step).unwrap();
    assert!(loss.is_finite() && loss > 0.0, "{loss}");
}
