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
    /// An empty directory `name` under the shared root.
    fn fresh(&self, name: &str) -> PathBuf {
        let dir = self.root.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
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
        // The library's own conversions (init_from of a .pkl or .pth) find Python by
        // $MG_PYTHON too; set while the other tests wait here, before any reads it.
        std::env::set_var("MG_PYTHON", python());
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

/// A copy of every variable by name, to compare with after a load.
fn snapshot(t: &multigrid::train::Trainer) -> BTreeMap<String, Tensor> {
    sorted_vars(t)
        .into_iter()
        .map(|(k, v)| (k, v.copy()))
        .collect()
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

/// Writes our weights under Caffe2's blob names, as PySlowFast's Caffe2 SlowFast, I3D, C2D and
/// Slow checkpoints name them (non-local blocks `nonlocal_convS_B_*`), into a pickle of numpy
/// arrays (`{"blobs": ...}`, protocol 2 as Python 2 wrote them) with solver state beside them;
/// argv: model.safetensors, out.pkl, then extra blob names to add, or `squeeze=NAME` to write
/// our tensor NAME without its trailing dimensions of one.
const CAFFE2_WRITER: &str = r#"
import pickle, re, sys
import numpy as np
from pyth import read_safetensors
BN = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}
def c2(n):
    if n.startswith("head.projection."):
        return "pred_" + n[len("head.projection.")]
    m = re.fullmatch(r"s1\.pathway(\d)_stem\.(conv|bn)\.(\w+)", n)
    if m:
        p, kind, f = m.groups()
        return ("t_" if p == "1" else "") + ("conv1_w" if kind == "conv" else "res_conv1_bn_" + BN[f])
    m = re.fullmatch(r"s(\d)_fuse\.(conv_f2s|bn)\.(\w+)", n)
    if m:
        s, kind, f = m.groups()
        base = "t_pool1_subsample" if s == "1" else f"t_res{s}_1_branch2b_bn_subsample"
        return base + ("_w" if kind == "conv_f2s" else "_bn_" + BN[f])
    m = re.fullmatch(r"s(\d)\.pathway0_nonlocal(\d+)\.(?:conv_(theta|phi|g|out)|bn)\.(\w+)", n)
    if m:
        s, b, conv, f = m.groups()
        return f"nonlocal_conv{s}_{b}_" + (f"{conv}_{f[0]}" if conv else "bn_" + BN[f])
    m = re.fullmatch(r"s(\d)\.pathway(\d)_res(\d+)\.(branch1|branch2\.[a-c])(_bn)?\.(\w+)", n)
    s, p, b, conv, bn, f = m.groups()
    base = ("t_" if p == "1" else "") + f"res{s}_{b}_" + conv.replace(".", "")
    return base + ("_bn_" + BN[f] if bn else "_w")
squeeze = {a[len("squeeze="):] for a in sys.argv[3:] if a.startswith("squeeze=")}
blobs = {}
for n, t in read_safetensors(sys.argv[1]).items():
    a = t.numpy()
    if n in squeeze:
        shape = list(a.shape)
        while shape and shape[-1] == 1:
            shape.pop()
        a = a.reshape(shape)
    blobs[c2(n)] = a
    blobs[c2(n) + "_momentum"] = np.zeros_like(a)
blobs["lr"] = np.array([0.1], dtype=np.float32)
blobs["model_iter"] = np.array([1000], dtype=np.int64)
for extra in sys.argv[3:]:
    if not extra.startswith("squeeze="):
        blobs[extra] = np.ones((2, 2), dtype=np.float32)
with open(sys.argv[2], "wb") as f:
    pickle.dump({"blobs": blobs}, f, protocol=2)
"#;

/// A PySlowFast Caffe2 checkpoint (`.pkl`, CHECKPOINT_TYPE caffe2) loads bit for bit under
/// the converted names; a blob that maps to nothing is named in the error, or listed with
/// skip_missing; a pickle that asks for more than arrays is refused.
#[test]
fn a_caffe2_pkl_loads_bit_exact_and_unmapped_blobs_are_named() {
    use multigrid::train::checkpoint::InitOptions;
    let t = trained();
    let dir = t.fresh("caffe2");
    let model = t.checkpoint().join("model.safetensors");
    let saved = read(&model);
    let pkl = dir.join("SLOWFAST_tiny.pkl");
    python_ok(CAFFE2_WRITER, &[&model, &pkl]);
    let mut tr =
        multigrid::train::Trainer::new(t.config_with(serde_json::json!({})), &dir.join("run"))
            .unwrap();
    let r = tr.init_from(&pkl).unwrap();
    assert_eq!(r.loaded, saved.len());
    assert!(r.skipped.is_empty() && r.unused.is_empty() && r.reinitialised.is_empty());
    assert!(
        r.notes.iter().any(|n| n.contains("Caffe2")),
        "{:?}",
        r.notes
    );
    let loaded: BTreeMap<String, Tensor> = sorted_vars(&tr).into_iter().collect();
    assert_bit_equal(&saved, &loaded, "Caffe2 .pkl");

    // A non-local block's blob maps to nothing of this model (it has none): named, with the
    // name it converts to, or listed on request.
    let extra = "nonlocal_conv3_1_theta_w";
    let pkl2 = dir.join("with_nonlocal.pkl");
    python_ok(CAFFE2_WRITER, &[&model, &pkl2, Path::new(extra)]);
    let e = tr.init_from(&pkl2).unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "{extra} (a Caffe2 blob), as s3.pathway0_nonlocal1.conv_theta.weight, maps to no tensor"
        )) && e.contains("--init-skip-missing"),
        "{e}"
    );
    let r = tr
        .init_from_with(&pkl2, InitOptions { skip_missing: true })
        .unwrap();
    assert_eq!(r.loaded, saved.len());
    assert_eq!(r.unused.len(), 1, "{:?}", r.unused);
    assert!(r.unused[0].starts_with(extra), "{:?}", r.unused);

    // Only arrays are unpickled: a pickle that would call a function is refused.
    let evil = dir.join("evil.pkl");
    python_ok(
        "import os, pickle, sys\npickle.dump({'blobs': {}, 'f': os.getcwd}, open(sys.argv[1], 'wb'))",
        &[&evil],
    );
    let e = tr.init_from(&evil).unwrap_err().to_string();
    assert!(e.contains("getcwd") && e.contains("--trust-pickle"), "{e}");
}

/// Writes a 2D ResNet with torchvision's names (basic blocks, as resnet18, at this test's
/// width: stem 8 channels, stages of 32, 64, 128, 256, a 1000-class fc; with `bottleneck`,
/// as resnet50: 3, 4, 6, 3 blocks of 1x1, 3x3, 1x1 convolutions, 8 << i channels inside, the
/// same outputs) as .pth and .safetensors; argv: out.pth, out.safetensors[, bottleneck].
const RESNET2D_WRITER: &str = r#"
import sys, torch
from collections import OrderedDict
from pyth import write_safetensors
torch.manual_seed(0)
sd = OrderedDict()
def bn(p, c):
    sd[p + ".weight"] = torch.rand(c) + 0.5
    sd[p + ".bias"] = torch.randn(c)
    sd[p + ".running_mean"] = torch.randn(c)
    sd[p + ".running_var"] = torch.rand(c) + 0.5
    sd[p + ".num_batches_tracked"] = torch.tensor(7)
bottleneck = sys.argv[3:] == ["bottleneck"]
sd["conv1.weight"] = torch.randn(8, 3, 7, 7)
bn("bn1", 8)
cin = 8
for i in range(4):
    cout = 32 << i
    inner = 8 << i
    for b in range([3, 4, 6, 3][i] if bottleneck else 2):
        p = f"layer{i + 1}.{b}"
        if bottleneck:
            sd[p + ".conv1.weight"] = torch.randn(inner, cin if b == 0 else cout, 1, 1)
            bn(p + ".bn1", inner)
            sd[p + ".conv2.weight"] = torch.randn(inner, inner, 3, 3)
            bn(p + ".bn2", inner)
            sd[p + ".conv3.weight"] = torch.randn(cout, inner, 1, 1)
            bn(p + ".bn3", cout)
        else:
            sd[p + ".conv1.weight"] = torch.randn(cout, cin if b == 0 else cout, 3, 3)
            bn(p + ".bn1", cout)
            sd[p + ".conv2.weight"] = torch.randn(cout, cout, 3, 3)
            bn(p + ".bn2", cout)
        if b == 0:
            sd[p + ".downsample.0.weight"] = torch.randn(cout, cin, 1, 1)
            bn(p + ".downsample.1", cout)
    cin = cout
sd["fc.weight"] = torch.randn(1000, 256)
sd["fc.bias"] = torch.randn(1000)
torch.save(sd, sys.argv[1])
write_safetensors(sd, sys.argv[2])
"#;

/// A 2D ImageNet ResNet (torchvision's names, .safetensors or .pth) is inflated onto the slow
/// pathway as PySlowFast's CHECKPOINT_INFLATE: each kernel repeated over the temporal size and
/// divided by it; the fast pathway, the lateral connections and the head do not map: an
/// error names them, or, skipped, they are listed and keep their initial values.
#[test]
fn a_2d_imagenet_resnet_inflates_onto_the_slow_pathway() {
    use multigrid::train::checkpoint::InitOptions;
    let t = trained();
    let dir = t.fresh("resnet2d");
    let (pth, st) = (dir.join("resnet.pth"), dir.join("resnet.safetensors"));
    python_ok(RESNET2D_WRITER, &[&pth, &st]);
    let w2d = read(&st);
    let mut tr =
        multigrid::train::Trainer::new(t.config_with(serde_json::json!({})), &dir.join("run"))
            .unwrap();
    let before = snapshot(&tr);
    let e = tr.init_from(&st).unwrap_err().to_string();
    assert!(
        e.contains("s1.pathway1_stem.bn.bias [1] is missing") && e.contains("--init-skip-missing"),
        "{e}"
    );
    for (k, v) in sorted_vars(&tr) {
        assert!(v.equal(&before[&k]), "{k} changed although the load failed");
    }

    let skip = InitOptions { skip_missing: true };
    let r = tr.init_from_with(&st, skip).unwrap();
    assert_eq!(r.checkpoint_classes, Some(1000));
    assert_eq!(
        r.reinitialised,
        ["head.projection.bias", "head.projection.weight"]
    );
    // Every conv of the 2D net: stem, 2 per block, a shortcut per stage.
    assert_eq!(r.inflated, 1 + 4 * (2 * 2 + 1));
    assert!(r.unused.is_empty(), "{:?}", r.unused);
    let skipped = r.skipped.join("\n");
    for name in [
        "s1.pathway1_stem.conv.weight",
        "s1_fuse.conv_f2s.weight",
        "s5.pathway1_res1.branch2.b_bn.running_var",
    ] {
        assert!(skipped.contains(name), "{name} not listed: {skipped}");
    }
    assert!(!skipped.contains("pathway0"), "{skipped}");
    let after: BTreeMap<String, Tensor> = sorted_vars(&tr).into_iter().collect();
    for (k, v) in &after {
        if k.contains("pathway1") || k.contains("_fuse") {
            assert!(v.equal(&before[k]), "{k} did not keep its initial values");
        }
    }
    // A temporal kernel of 3 (res4): the 2D kernel / 3 at each of the 3 positions.
    let a = &after["s4.pathway0_res1.branch2.a.weight"];
    let k = &w2d["layer3.1.conv1.weight"];
    assert_eq!(a.size(), [128, 128, 3, 3, 3]);
    for i in 0..3 {
        assert!(a.select(2, i).equal(&(k / 3.0)), "temporal position {i}");
    }
    // A temporal kernel of 1 whose input also holds the fast pathway's lateral channels: the
    // slow channels are the 2D kernel, the lateral ones start at zero.
    let a = &after["s2.pathway0_res0.branch2.a.weight"];
    assert_eq!(a.size(), [32, 10, 1, 3, 3]);
    assert!(a
        .narrow(1, 0, 8)
        .select(2, 0)
        .equal(&w2d["layer1.0.conv1.weight"]));
    assert_eq!(
        a.narrow(1, 8, 2)
            .abs()
            .sum(tch::Kind::Float)
            .double_value(&[]),
        0.0
    );
    assert!(after["s1.pathway0_stem.bn.running_var"].equal(&w2d["bn1.running_var"]));
    assert!(after["s3.pathway0_res0.branch1_bn.bias"].equal(&w2d["layer2.0.downsample.1.bias"]));

    // The .pth, through Python, loads the same.
    let mut other =
        multigrid::train::Trainer::new(t.config_with(serde_json::json!({})), &dir.join("run2"))
            .unwrap();
    let r = other.init_from_with(&pth, skip).unwrap();
    assert_eq!(r.inflated, 1 + 4 * (2 * 2 + 1));
    for (k, v) in sorted_vars(&other) {
        if k.contains("pathway0") {
            assert!(
                v.equal(&after[&k]),
                "{k} differs between .pth and .safetensors"
            );
        }
    }

    // The CLI: --init-skip-missing lists what was not loaded.
    let out = ok(multigrid(&[
        os("train"),
        os("--config"),
        os(&t.config),
        os("--output-dir"),
        os(&dir.join("cli")),
        os("--init-from"),
        os(&pth),
        os("--init-skip-missing"),
    ]));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("not loaded (kept its initial values): s1.pathway1_stem.conv.weight")
            && said.contains("inflated 21 2D kernels"),
        "{said}"
    );
}

/// An I3D (depth 50, as PySlowFast's I3D R50, at this test's width) with a non-local block
/// after block 1 of res3, as PySlowFast's Caffe2 I3D-NL checkpoints have them
/// (`nonlocal_conv3_1_*`).
fn i3d_nonlocal(t: &Trained) -> multigrid::Config {
    t.config_with(serde_json::json!({"model": {
        "arch": "i3d", "depth": 50, "nonlocal_location": [[[]], [[1]], [[]], [[]]]}}))
}

/// PySlowFast's Caffe2 checkpoint of a single-pathway model (I3D with a non-local block: blob
/// names `conv1_w`, `res_conv1_bn_s`, `res2_0_branch2a_w`, `nonlocal_conv3_1_theta_w`,
/// `pred_w`, ...) loads bit for bit, a blob with its trailing ones dropped included.
#[test]
fn a_caffe2_pkl_of_an_i3d_with_nonlocal_loads_bit_exact() {
    let t = trained();
    let dir = t.fresh("caffe2_i3d");
    // Random weights (not the initial ones), under our names.
    let src = multigrid::train::Trainer::new(i3d_nonlocal(t), &dir.join("src")).unwrap();
    tch::manual_seed(3);
    let saved: BTreeMap<String, Tensor> = sorted_vars(&src)
        .into_iter()
        .map(|(k, v)| (k, Tensor::randn_like(&v)))
        .collect();
    assert!(saved.contains_key("s3.pathway0_nonlocal1.conv_theta.weight"));
    assert!(saved.contains_key("s4.pathway0_res5.branch2.c_bn.running_var"));
    let model = dir.join("i3d.safetensors");
    let named: Vec<(&str, &Tensor)> = saved.iter().map(|(k, v)| (k.as_str(), v)).collect();
    Tensor::write_safetensors(&named, &model).unwrap();
    let pkl = dir.join("I3D_NLN_tiny.pkl");
    let squeezed = "s3.pathway0_nonlocal1.conv_out.weight";
    python_ok(
        CAFFE2_WRITER,
        &[&model, &pkl, Path::new(&format!("squeeze={squeezed}"))],
    );

    let mut tr = multigrid::train::Trainer::new(i3d_nonlocal(t), &dir.join("run")).unwrap();
    let r = tr.init_from(&pkl).unwrap();
    assert_eq!(r.loaded, saved.len());
    assert!(r.skipped.is_empty() && r.unused.is_empty() && r.reinitialised.is_empty());
    let loaded: BTreeMap<String, Tensor> = sorted_vars(&tr).into_iter().collect();
    assert_eq!(loaded[squeezed].size(), [64, 32, 1, 1, 1]);
    assert_bit_equal(&saved, &loaded, "Caffe2 .pkl of an I3D-NL");

    // Without the non-local block in the model, its blobs are named.
    let mut plain = multigrid::train::Trainer::new(
        t.config_with(serde_json::json!({"model": {"arch": "i3d", "depth": 50}})),
        &dir.join("plain"),
    )
    .unwrap();
    let e = plain.init_from(&pkl).unwrap_err().to_string();
    assert!(
        e.contains("nonlocal_conv3_1_bn_b (a Caffe2 blob), as s3.pathway0_nonlocal1.bn.bias"),
        "{e}"
    );
}

/// A 2D ImageNet ResNet-50 with torchvision's names inflates onto an I3D: the 5x7x7 stem and
/// the 3x1x1 first convolutions are the 2D kernel / T at each temporal position, the 1x1x1 ones
/// the 2D kernel; the non-local block, which has no 2D counterpart, is named, or with
/// skip_missing listed and left at its initial values.
#[test]
fn a_2d_imagenet_resnet_inflates_onto_an_i3d_with_nonlocal() {
    use multigrid::train::checkpoint::InitOptions;
    let t = trained();
    let dir = t.fresh("resnet2d_i3d");
    let (pth, st) = (dir.join("resnet50.pth"), dir.join("resnet50.safetensors"));
    python_ok(RESNET2D_WRITER, &[&pth, &st, Path::new("bottleneck")]);
    let w2d = read(&st);
    let mut tr = multigrid::train::Trainer::new(i3d_nonlocal(t), &dir.join("run")).unwrap();
    let before = snapshot(&tr);
    let e = tr.init_from(&st).unwrap_err().to_string();
    assert!(
        e.contains("s3.pathway0_nonlocal1.bn.bias [64] is missing")
            && e.contains("--init-skip-missing"),
        "{e}"
    );

    let r = tr
        .init_from_with(&st, InitOptions { skip_missing: true })
        .unwrap();
    assert_eq!(r.checkpoint_classes, Some(1000));
    assert_eq!(
        r.reinitialised,
        ["head.projection.bias", "head.projection.weight"]
    );
    // The stem, 3 per block of 16, a shortcut per stage.
    assert_eq!(r.inflated, 1 + 16 * 3 + 4);
    assert!(r.unused.is_empty(), "{:?}", r.unused);
    // Exactly the non-local block: 4 convolutions' weight and bias, its BN's 4 tensors.
    assert_eq!(r.skipped.len(), 12, "{:?}", r.skipped);
    for s in &r.skipped {
        assert!(
            s.starts_with("s3.pathway0_nonlocal1.") && s.ends_with("not in the checkpoint"),
            "{s}"
        );
    }
    let after: BTreeMap<String, Tensor> = sorted_vars(&tr).into_iter().collect();
    for (k, v) in &after {
        if k.contains("nonlocal") {
            assert!(v.equal(&before[k]), "{k} did not keep its initial values");
        }
    }
    // Kernel [T, ...] of `ours` is `theirs` / T at each of its T positions.
    let inflated = |ours: &str, theirs: &str, shape: [i64; 5]| {
        let (a, k) = (&after[ours], &w2d[theirs]);
        assert_eq!(a.size(), shape, "{ours}");
        let t = shape[2];
        for i in 0..t {
            let want = if t == 1 {
                k.shallow_clone()
            } else {
                k / t as f64
            };
            assert!(a.select(2, i).equal(&want), "{ours} at {i}");
        }
    };
    // I3D's res2 pattern [3], res3 [3, 1], res5 [1, 3].
    #[rustfmt::skip]
    let kernels: [(&str, &str, [i64; 5]); 7] = [
        ("s1.pathway0_stem.conv.weight", "conv1.weight", [8, 3, 5, 7, 7]),
        ("s2.pathway0_res0.branch2.a.weight", "layer1.0.conv1.weight", [8, 8, 3, 1, 1]),
        ("s3.pathway0_res1.branch2.a.weight", "layer2.1.conv1.weight", [16, 64, 1, 1, 1]),
        ("s3.pathway0_res2.branch2.a.weight", "layer2.2.conv1.weight", [16, 64, 3, 1, 1]),
        ("s5.pathway0_res1.branch2.a.weight", "layer4.1.conv1.weight", [64, 256, 3, 1, 1]),
        ("s4.pathway0_res5.branch2.b.weight", "layer3.5.conv2.weight", [32, 32, 1, 3, 3]),
        ("s5.pathway0_res0.branch1.weight", "layer4.0.downsample.0.weight", [256, 128, 1, 1, 1]),
    ];
    for (ours, theirs, shape) in kernels {
        inflated(ours, theirs, shape);
    }
    assert!(after["s4.pathway0_res3.branch2.c_bn.running_mean"]
        .equal(&w2d["layer3.3.bn3.running_mean"]));
    assert!(after["s1.pathway0_stem.bn.weight"].equal(&w2d["bn1.weight"]));
}

/// PySlowFast's resume (scripts/pyslowfast_fixture.py `resume`: its get_last_checkpoint,
/// build_model, construct_optimizer, load_checkpoint and multigrid update_long_cycle, as
/// tools/train_net.py calls them) of `dir`; None, with a line on stderr, without
/// $MG_PYSLOWFAST (a SlowFast work tree) and $MG_PYSLOWFAST_PYTHON (the fixture script's
/// venv, see its docstring).
fn pyslowfast_resume(dir: &Path) -> Option<serde_json::Value> {
    let (Some(slowfast), Some(py)) = (
        std::env::var_os("MG_PYSLOWFAST"),
        std::env::var_os("MG_PYSLOWFAST_PYTHON"),
    ) else {
        eprintln!(
            "PySlowFast's resume not run: set MG_PYSLOWFAST (a SlowFast work tree) and \
             MG_PYSLOWFAST_PYTHON (the venv of scripts/pyslowfast_fixture.py)"
        );
        return None;
    };
    let out = ok(Command::new(py)
        .arg(common::repo().join("scripts/pyslowfast_fixture.py"))
        .args([os("resume"), os(&slowfast), os(dir)])
        .output()
        .unwrap());
    let text = String::from_utf8_lossy(&out.stdout);
    Some(serde_json::from_str(text.lines().last().unwrap_or("")).unwrap())
}

/// The trained checkpoint with its manifest's config patched (section by section) and its
/// completed epochs set, exported into the PySlowFast OUTPUT_DIR `name/out`; returns that
/// directory and the export's stderr.
fn export_as(name: &str, patch: serde_json::Value, completed: u32) -> (PathBuf, String) {
    let t = trained();
    let root = t.root.join(name);
    let _ = std::fs::remove_dir_all(&root);
    let ckpt = root.join("ckpt");
    std::fs::create_dir_all(&ckpt).unwrap();
    for e in std::fs::read_dir(t.checkpoint()).unwrap().flatten() {
        std::fs::copy(e.path(), ckpt.join(e.file_name())).unwrap();
    }
    let path = ckpt.join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (section, keys) in patch.as_object().unwrap() {
        for (k, x) in keys.as_object().unwrap() {
            m["config"][section][k] = x.clone();
        }
    }
    m["completed_epochs"] = serde_json::json!(completed);
    m["epoch"] = serde_json::json!(completed);
    std::fs::write(&path, m.to_string()).unwrap();
    let out = root.join("out");
    let said = ok(multigrid(&[
        os("checkpoint"),
        os("export"),
        os(&ckpt),
        os(&out),
    ]));
    let file = out
        .join("checkpoints")
        .join(format!("checkpoint_epoch_{completed:05}.pyth"));
    assert!(file.is_file(), "no {}", file.display());
    let stdout = String::from_utf8_lossy(&said.stdout);
    assert!(stdout.contains(&file.display().to_string()), "{stdout}");
    (out, String::from_utf8_lossy(&said.stderr).into_owned())
}

fn load(r: &serde_json::Value, i: usize) -> &serde_json::Value {
    &r["loads"][i]
}

/// A `checkpoint export` into an OUTPUT_DIR is PySlowFast's file
/// (checkpoints/checkpoint_epoch_NNNNN.pyth) and resumes there: its cfg builds PySlowFast's
/// model, and optimizer_state has the parameter groups of the model PySlowFast builds at the
/// resume epoch (two with BatchNorm3d, one with SubBatchNorm3d, whose scale and shift are no
/// BN parameters for construct_optimizer), so its optimizer.load_state_dict takes it
/// (facebookresearch/SlowFast#478 is that error), every momentum buffer on a parameter of
/// its shape. With the long cycle, train_net loads the file into epoch 0's model first and
/// again into the resume epoch's where the shape changes: fine while both have the same BN
/// layout; where they differ PySlowFast fails on any file, its own included, and the export
/// says so.
#[test]
fn exported_pyth_resumes_in_pyslowfast_at_its_stage() {
    let (plain, _) = export_as("psf-plain", serde_json::json!({}), 1);
    let (sub, _) = export_as(
        "psf-sub",
        serde_json::json!({"multigrid": {"bn_base_size": 2}}),
        1,
    );
    // Long cycle on one GPU, batch 4, BN_BASE_SIZE 8: stages of 32 and 16 clips are
    // sub-batch BN, 8 plain BN, 4 sync BN. With the short cycle, as PySlowFast's
    // get_long_cycle_schedule indexes its three shapes.
    let lc = serde_json::json!({
        "multigrid": {"long_cycle": true, "short_cycle": true},
        "solver": {"steps": [0, 8], "lrs": [1, 0.1], "max_epoch": 16}
    });
    let s = multigrid::Schedule::new(trained().config_with(lc.clone())).unwrap();
    let first_with = |b: u32| {
        (1..s.max_epoch())
            .find(|&e| s.stages()[s.stage_index_at(e)].batch_factor == b)
            .unwrap()
    };
    let (e4, e2) = (first_with(4), first_with(2));
    let (lc_sub, said_sub) = export_as("psf-lc-sub", lc.clone(), e4);
    assert!(!said_sub.contains("SlowFast#478"), "{said_sub}");
    let (lc_bn, said_bn) = export_as("psf-lc-bn", lc, e2);
    assert!(said_bn.contains("SlowFast#478"), "{said_bn}");

    let Some(r) = pyslowfast_resume(&plain) else {
        return;
    };
    assert_eq!(r["start_epoch"], 1, "{r}");
    let l = load(&r, 0);
    assert_eq!(l["norm_type"], "batchnorm", "{r}");
    assert_eq!(l["groups"].as_array().unwrap().len(), 2, "{r}");
    assert!(l["ok"] == true && l["shapes_match"] == true, "{r}");
    assert!(l["momentum"].as_u64().unwrap() > 0, "{r}");

    let r = pyslowfast_resume(&sub).unwrap();
    let l = load(&r, 0);
    assert_eq!(l["norm_type"], "sub_batchnorm", "{r}");
    assert_eq!(l["groups"].as_array().unwrap().len(), 1, "{r}");
    assert!(l["ok"] == true && l["shapes_match"] == true, "{r}");

    // Epoch 0 (32 clips) and the resume epoch (16) both sub-batch BN: both loads take it.
    let r = pyslowfast_resume(&lc_sub).unwrap();
    assert_eq!(r["start_epoch"], e4, "{r}");
    assert_eq!(r["loads"].as_array().unwrap().len(), 2, "{r}");
    for i in 0..2 {
        let l = load(&r, i);
        assert_eq!(l["norm_type"], "sub_batchnorm", "{r}");
        assert!(l["ok"] == true && l["shapes_match"] == true, "{r}");
    }
    // The resume epoch's plain BN: its model takes the file, epoch 0's (train_net's first
    // load) cannot take any file of that layout.
    let r = pyslowfast_resume(&lc_bn).unwrap();
    let (start, direct) = (load(&r, 0), load(&r, 1));
    assert!(start["ok"] == false, "{r}");
    assert!(
        start["error"]
            .as_str()
            .unwrap()
            .contains("different number of parameter groups"),
        "{r}"
    );
    assert_eq!(direct["norm_type"], "batchnorm", "{r}");
    assert!(
        direct["ok"] == true && direct["shapes_match"] == true,
        "{r}"
    );
}
