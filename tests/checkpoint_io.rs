//! PySlowFast `.pyth` checkpoints: ours → .pyth → ours bit for bit, the .pyth loads into a
//! torch.nn SlowFast with PySlowFast's names (strict) and its optimizer state into
//! construct_optimizer's SGD, PySlowFast's spellings convert on import, and fine-tuning
//! (`init_from`) re-initialises only a changed classifier. Needs Python with torch
//! ($MG_PYTHON, else the set-up's .venv).
#![cfg(feature = "torch")]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use tch::Tensor;

fn python() -> PathBuf {
    std::env::var_os("MG_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo().join(".venv/bin/python"))
}

fn multigrid(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_multigrid"))
        .args(args)
        .env("MG_PYTHON", python())
        .output()
        .unwrap()
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn fails(out: Output) -> String {
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let e = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!e.contains("panicked"), "{e}");
    e
}

fn os<P: AsRef<std::ffi::OsStr> + ?Sized>(p: &P) -> &std::ffi::OsStr {
    p.as_ref()
}

/// Runs Python code with `args`; asserts it succeeds.
fn python_ok(code: &str, args: &[&Path]) {
    let out = Command::new(python())
        .arg("-c")
        .arg(code)
        .args(args)
        .env("PYTHONPATH", common::repo().join("scripts"))
        .output()
        .unwrap();
    ok(out);
}

struct Trained {
    root: PathBuf,
    config: PathBuf,
    /// The run directory, with one checkpoint after one epoch.
    run: PathBuf,
}

impl Trained {
    fn checkpoint(&self) -> PathBuf {
        multigrid::train::checkpoint::resolve(&self.run).unwrap()
    }
    /// The config with `patch`'s keys replaced, section by section.
    fn config_with(&self, patch: serde_json::Value) -> multigrid::Config {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&self.config).unwrap()).unwrap();
        for (section, keys) in patch.as_object().unwrap() {
            for (k, x) in keys.as_object().unwrap() {
                v[section][k] = x.clone();
            }
        }
        multigrid::Config::from_json(&v.to_string()).unwrap()
    }
}

/// One epoch of a tiny SlowFast (depth 18, width 8, 8 frames at 32 px, 12 classes), shared by
/// the tests: momentum and BN statistics are those of real steps.
fn trained() -> &'static Trained {
    static RUN: OnceLock<Trained> = OnceLock::new();
    RUN.get_or_init(|| {
        // Per process, so that two test runs at once do not share files; those of finished
        // runs are removed.
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("checkpoint_io-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let root = tmp.join(format!("checkpoint_io-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let data = root.join("data");
        common::gen_store(&data, 16);
        let config = serde_json::json!({
            "data": {"num_frames": 8, "sampling_rate": 1, "train_jitter_scales": [34, 40],
                     "train_crop_size": 32, "test_crop_size": 32},
            "train": {"batch_size": 4, "checkpoint_period": 1},
            "solver": {"base_lr": 0.02, "lr_policy": "steps_with_relative_lrs", "lrs": [1],
                       "steps": [0], "max_epoch": 1},
            "model": {"depth": 18, "width_per_group": 8, "alpha": 2, "num_classes": 12},
            "run": {"device": "cpu", "data_dir": data, "precise_bn_batches": 2,
                    "test_num_temporal_views": 1, "test_num_spatial_crops": 1}
        });
        let config_path = root.join("config.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let run = root.join("run");
        ok(multigrid(&[
            os("train"),
            os("--config"),
            os(&config_path),
            os("--output-dir"),
            os(&run),
        ]));
        Trained {
            root,
            config: config_path,
            run,
        }
    })
}

fn read(path: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

fn assert_bit_equal(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>, what: &str) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}: names differ"
    );
    for (k, x) in a {
        let y = &b[k];
        assert_eq!(x.kind(), y.kind(), "{what}: {k} dtype");
        assert_eq!(x.size(), y.size(), "{what}: {k} shape");
        // Same bytes: compare the raw bits, so -0.0 against 0.0 or NaN payloads would show.
        let bits = |t: &Tensor| t.contiguous().view_dtype(tch::Kind::Uint8);
        assert!(bits(x).equal(&bits(y)), "{what}: {k} differs");
    }
}

/// The trained checkpoint exported once (`checkpoint export RUN OUT.pyth`), for every test.
fn exported() -> &'static Path {
    static PYTH: OnceLock<PathBuf> = OnceLock::new();
    PYTH.get_or_init(|| {
        let t = trained();
        let to = t.root.join("exported").join("ckpt.pyth");
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        let out = ok(multigrid(&[
            os("checkpoint"),
            os("export"),
            os(&t.run),
            os(&to),
        ]));
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("epoch 0"), "{said}");
        to
    })
}

#[test]
fn ours_to_pyth_to_ours_is_bit_exact() {
    let t = trained();
    let dir = t.root.join("round_trip");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pyth = exported();
    let back = dir.join("imported");
    let out = ok(multigrid(&[
        os("checkpoint"),
        os("import"),
        os(&pyth),
        os(&back),
        os("--config"),
        os(&t.config),
    ]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("a resume starts at epoch 1"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let ckpt = t.checkpoint();
    assert_bit_equal(
        &read(&ckpt.join("model.safetensors")),
        &read(&back.join("model.safetensors")),
        "weights and BN statistics",
    );
    let momentum = read(&ckpt.join("optimizer.safetensors"));
    assert!(momentum.len() > 100, "{} momentum buffers", momentum.len());
    assert_bit_equal(
        &momentum,
        &read(&back.join("optimizer.safetensors")),
        "momentum",
    );
    let m = multigrid::train::checkpoint::read_manifest(&back).unwrap();
    assert_eq!(m.completed_epochs, Some(1));
    assert!(m.imported_from.is_some());
    assert_eq!(m.config, multigrid::Config::from_file(&t.config).unwrap());
    assert!(back.join("pyslowfast_cfg.yaml").is_file());

    // Resuming the imported checkpoint in a longer run starts at the epoch after PySlowFast's
    // `epoch`, at that epoch's first step in this run's plan.
    let longer = dir.join("longer");
    std::fs::create_dir_all(longer.join("checkpoints")).unwrap();
    std::fs::rename(&back, longer.join("checkpoints").join("step_000000000")).unwrap();
    let mut tr = multigrid::train::Trainer::new(
        t.config_with(serde_json::json!({"solver": {"max_epoch": 2}})),
        &longer,
    )
    .unwrap();
    assert!(tr.resume().unwrap());
    assert_eq!(Some(tr.next_step()), tr.plan().epoch_first_step(1));
    assert!(tr.next_step() > 0);
    std::fs::rename(longer.join("checkpoints").join("step_000000000"), &back).unwrap();

    // Nothing is imported over an existing checkpoint.
    let e = fails(multigrid(&[
        os("checkpoint"),
        os("import"),
        os(&pyth),
        os(&back),
        os("--config"),
        os(&t.config),
    ]));
    assert!(e.contains("exists and is not empty"), "{e}");
}

/// What PySlowFast's load_checkpoint does with the file: torch.load (weights_only, the
/// default of torch >= 2.6), load_state_dict into a model with its names, and the optimizer
/// built as construct_optimizer builds it (BN parameters, then the others, module order).
const LOAD_LIKE_PYSLOWFAST: &str = r#"
import json, sys, torch
from safetensors.torch import load_file
from slowfast_reference import SlowFast
pyth, cfg, weights, optim = sys.argv[1:5]
model = SlowFast(json.load(open(cfg))["config"]["model"])
ck = torch.load(pyth, map_location="cpu", weights_only=True)
assert list(ck["model_state"]) == list(model.state_dict()), "model_state is not in module order"
model.load_state_dict(ck["model_state"], strict=True)
sd = model.state_dict()
for k, v in load_file(weights).items():
    assert torch.equal(sd[k], v), k
bn, other = [], []
for name_m, m in model.named_modules():
    for name_p, p in m.named_parameters(recurse=False):
        is_bn = isinstance(m, torch.nn.modules.batchnorm._NormBase)
        (bn if is_bn else other).append((f"{name_m}.{name_p}", p))
opt = torch.optim.SGD(
    [{"params": [p for _, p in bn], "weight_decay": 0.0},
     {"params": [p for _, p in other], "weight_decay": 1e-4}],
    lr=0.1, momentum=0.9, nesterov=True)
opt.load_state_dict(ck["optimizer_state"])
mom = {k: v for k, v in load_file(optim).items() if not k.startswith("amp.")}
got = {n: opt.state[p]["momentum_buffer"] for n, p in bn + other if p in opt.state}
assert set(got) == set(mom), sorted(set(got) ^ set(mom))[:5]
for k in mom:
    assert torch.equal(got[k], mom[k]), k
assert opt.param_groups[0]["weight_decay"] == 0.0 and opt.param_groups[1]["weight_decay"] == 1e-4
assert ck["epoch"] == 0, ck["epoch"]
assert "NUM_CLASSES: 12" in ck["cfg"] and "DEPTH: 18" in ck["cfg"], ck["cfg"]
for k, v in ck["model_state"].items():
    if k.endswith("num_batches_tracked"):
        assert v.dtype == torch.int64 and v.dim() == 0, k
"#;

#[test]
fn exported_pyth_loads_like_pyslowfast_strictly() {
    let t = trained();
    let dir = t.root.join("strict");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pyth = exported();
    let ckpt = t.checkpoint();
    python_ok(
        LOAD_LIKE_PYSLOWFAST,
        &[
            pyth,
            &ckpt.join("manifest.json"),
            &ckpt.join("model.safetensors"),
            &ckpt.join("optimizer.safetensors"),
        ],
    );
}

/// A checkpoint as PySlowFast writes it from a DataParallel model with sub-batch BN, before
/// sub_to_normal_bn: `module.` prefixes, `X.bn.running_*`, `X.split_bn.running_*` (split size)
/// and the optimizer's single parameter group of that layout.
const PYSLOWFAST_SPELLING: &str = r#"
import sys, torch
from collections import OrderedDict
src, dst = sys.argv[1:3]
ck = torch.load(src, weights_only=True)
state = ck["model_state"]
names = [k for k in state if not k.rsplit(".", 1)[1] in ("running_mean", "running_var", "num_batches_tracked")]
is_bn = lambda k: k.split(".")[-2] == "bn" or k.split(".")[-2].endswith("_bn")
old_order = [k for k in names if is_bn(k)] + [k for k in names if not is_bn(k)]
out = OrderedDict()
for k, v in state.items():
    prefix, leaf = k.rsplit(".", 1)
    if leaf in ("running_mean", "running_var", "num_batches_tracked"):
        out[f"module.{prefix}.bn.{leaf}"] = v
        out[f"module.{prefix}.split_bn.{leaf}"] = torch.cat([v, v]) if v.dim() else v
    elif is_bn(k):
        out[f"module.{k}"] = v.reshape(-1, 1, 1, 1)
    else:
        out[f"module.{k}"] = v
opt = ck["optimizer_state"]
new_index = {n: i for i, n in enumerate(names)}
state_new = {new_index[old_order[i]]: s for i, s in opt["state"].items()}
group = dict(opt["param_groups"][1])
group["params"] = list(range(len(names)))
ck["model_state"] = out
ck["optimizer_state"] = {"state": state_new, "param_groups": [group]}
torch.save(ck, dst)
"#;

#[test]
fn pyslowfast_spellings_convert_on_import() {
    let t = trained();
    let dir = t.root.join("spellings");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pyth = exported();
    let spelled = dir.join("dataparallel_subbn.pyth");
    python_ok(PYSLOWFAST_SPELLING, &[pyth, &spelled]);
    let back = dir.join("imported");
    let out = ok(multigrid(&[
        os("checkpoint"),
        os("import"),
        os(&spelled),
        os(&back),
        os("--config"),
        os(&t.config),
    ]));
    let notes = String::from_utf8_lossy(&out.stderr);
    assert!(notes.contains("module."), "{notes}");
    assert!(notes.contains("sub-batch BN"), "{notes}");
    assert!(notes.contains("sub_batchnorm layout"), "{notes}");
    let ckpt = t.checkpoint();
    assert_bit_equal(
        &read(&ckpt.join("model.safetensors")),
        &read(&back.join("model.safetensors")),
        "weights",
    );
    assert_bit_equal(
        &read(&ckpt.join("optimizer.safetensors")),
        &read(&back.join("optimizer.safetensors")),
        "momentum",
    );
}

fn sorted_vars(t: &multigrid::train::Trainer) -> Vec<(String, Tensor)> {
    let mut v: Vec<_> = t.var_store().variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn init_from_with_other_classes_reinitialises_only_the_head() {
    let t = trained();
    let saved = read(&t.checkpoint().join("model.safetensors"));
    let mut tr = multigrid::train::Trainer::new(
        t.config_with(serde_json::json!({"model": {"num_classes": 5}})),
        &t.root.join("init5"),
    )
    .unwrap();
    let r = tr.init_from(&t.run).unwrap();
    assert_eq!(r.checkpoint_classes, Some(12));
    assert_eq!(
        r.reinitialised,
        ["head.projection.bias", "head.projection.weight"]
    );
    assert_eq!(r.loaded, saved.len() - 2);
    assert_eq!(tr.next_step(), 0);
    for (name, v) in sorted_vars(&tr) {
        if name.starts_with("head.projection.") {
            assert_eq!(v.size()[0], 5, "{name}");
            if name.ends_with("bias") {
                assert_eq!(v.abs().sum(tch::Kind::Float).double_value(&[]), 0.0);
            }
        } else {
            assert!(v.equal(&saved[&name]), "{name} was not loaded");
        }
    }

    // The same class count: everything is loaded, the head too.
    let mut same = multigrid::train::Trainer::new(
        t.config_with(serde_json::json!({})),
        &t.root.join("init12"),
    )
    .unwrap();
    let r = same.init_from(&t.checkpoint()).unwrap();
    assert!(r.reinitialised.is_empty() && r.checkpoint_classes.is_none());
    for (name, v) in sorted_vars(&same) {
        assert!(v.equal(&saved[&name]), "{name} was not loaded");
    }
}

#[test]
fn a_missing_or_misshapen_tensor_is_an_error_naming_it() {
    let t = trained();
    let dir = t.root.join("missing");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let gone = "s3.pathway1_res0.branch2.a.weight";
    let partial: Vec<(String, Tensor)> = read(&t.checkpoint().join("model.safetensors"))
        .into_iter()
        .filter(|(k, _)| k != gone)
        .collect();
    let file = dir.join("partial.safetensors");
    let named: Vec<(&str, &Tensor)> = partial.iter().map(|(k, v)| (k.as_str(), v)).collect();
    Tensor::write_safetensors(&named, &file).unwrap();

    let mut tr = multigrid::train::Trainer::new(
        t.config_with(serde_json::json!({"model": {"num_classes": 5}})),
        &dir.join("run"),
    )
    .unwrap();
    let before = sorted_vars(&tr)
        .into_iter()
        .map(|(k, v)| (k, v.copy()))
        .collect::<Vec<_>>();
    let e = tr.init_from(&file).unwrap_err().to_string();
    assert!(e.contains(gone) && e.contains("missing"), "{e}");
    // Nothing was half loaded.
    for ((k, a), (_, b)) in before.iter().zip(sorted_vars(&tr)) {
        assert!(a.equal(&b), "{k} changed although the load failed");
    }

    // Another width: every tensor's shape differs, and the error says which.
    let mut wide = multigrid::train::Trainer::new(
        t.config_with(serde_json::json!({"model": {"width_per_group": 16}})),
        &dir.join("wide"),
    )
    .unwrap();
    let e = wide.init_from(&t.run).unwrap_err().to_string();
    assert!(
        e.contains("s1.pathway0_stem.bn.bias is [8] in the checkpoint and [16] in the model"),
        "{e}"
    );

    // Import checks the weights against --config's model and names what does not fit.
    let pyth = exported();
    let cfg5 = dir.join("classes5.json");
    std::fs::write(
        &cfg5,
        serde_json::to_string(&t.config_with(serde_json::json!({"model": {"num_classes": 5}})))
            .unwrap(),
    )
    .unwrap();
    let e = fails(multigrid(&[
        os("checkpoint"),
        os("import"),
        os(&pyth),
        os(&dir.join("imported")),
        os("--config"),
        os(&cfg5),
    ]));
    assert!(e.contains("head.projection.weight is [12, "), "{e}");
    assert!(
        !dir.join("imported").exists(),
        "a failed import left its directory"
    );

    // No Python with torch: said so.
    let out = Command::new(env!("CARGO_BIN_EXE_multigrid"))
        .args([
            os("checkpoint"),
            os("export"),
            os(&t.run),
            os(&dir.join("x.pyth")),
        ])
        .env("MG_PYTHON", "/nonexistent/python")
        .output()
        .unwrap();
    let e = fails(out);
    assert!(
        e.contains("needs Python with torch") && e.contains("MG_PYTHON"),
        "{e}"
    );
    assert!(!dir.join("x.pyth").exists());

    // Not a checkpoint at all.
    let e = fails(multigrid(&[
        os("checkpoint"),
        os("export"),
        os(&dir),
        os(&dir.join("y.pyth")),
    ]));
    assert!(e.contains("neither a checkpoint directory"), "{e}");
}

/// `train --init-from X.pyth` fine-tunes for another class count; with --resume a checkpoint
/// of the run itself wins over --init-from.
#[test]
fn train_init_from_a_pyth_and_resume_wins() {
    let t = trained();
    let dir = t.root.join("finetune");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pyth = exported();
    let run = dir.join("run");
    let train = |extra: &[&std::ffi::OsStr]| {
        let mut args = vec![
            os("train"),
            os("--config"),
            os(&t.config),
            os("--output-dir"),
            os(&run),
            os("--init-from"),
            os(&pyth),
            os("--set"),
            os("model.num_classes=16"),
        ];
        args.extend_from_slice(extra);
        String::from_utf8_lossy(&ok(multigrid(&args)).stderr).into_owned()
    };
    let e = train(&[]);
    assert!(
        e.contains("re-initialised for 16 classes (the checkpoint has 12)"),
        "{e}"
    );
    let ckpt = multigrid::train::checkpoint::resolve(&run).unwrap();
    let head = &read(&ckpt.join("model.safetensors"))["head.projection.weight"];
    assert_eq!(head.size()[0], 16);
    let e = train(&[os("--resume")]);
    assert!(e.contains("resumed at step"), "{e}");
    assert!(!e.contains("initialised"), "{e}");
}
