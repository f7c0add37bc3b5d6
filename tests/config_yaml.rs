//! PySlowFast's YAML configs as they are (multigrid::schedule::pyslowfast). The fixtures in
//! tests/fixtures/pyslowfast_config come from `scripts/pyslowfast_fixture.py config`: the keys
//! of PySlowFast's shipped SlowFast configs, and expected.json, what PySlowFast's own loader
//! (fvcore's _BASE_, yacs' opts, assert_and_infer_cfg) makes of each case; child.yaml and
//! grandchild.yaml are hand-written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use multigrid::schedule::pyslowfast::{self, import, opts_from_args, to_pyslowfast, PySlowFastCfg};
use multigrid::schedule::{DatasetKind, EnsembleMethod, HeadAct, LossFunc, LrPolicy};
use multigrid::{Config, Schedule};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pyslowfast_config")
        .join(name)
}

fn opts(kv: &[&str]) -> Vec<(String, String)> {
    opts_from_args(kv).unwrap()
}

/// Numbers as f64, so PySlowFast's 0.1 and ours compare whatever their JSON form.
fn normal(v: &Value) -> Value {
    match v {
        Value::Number(n) => Value::from(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.iter().map(normal).collect()),
        other => other.clone(),
    }
}

#[test]
fn yaml_base_files_and_opts_give_pyslowfasts_own_config() {
    let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
    let expected: Value = serde_json::from_str(&text).unwrap();
    let cases = expected["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 10);
    for case in cases {
        let yaml = case["yaml"].as_str().unwrap();
        let kv: Vec<&str> = case["opts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let cfg = PySlowFastCfg::load(&fixture(yaml), &opts(&kv)).unwrap();
        let ours: BTreeMap<&str, Value> = cfg
            .changed()
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, normal(v)))
            .collect();
        let theirs: BTreeMap<&str, Value> = case["set"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str(), normal(v)))
            .collect();
        assert_eq!(ours, theirs, "{yaml} {kv:?}");
    }
}

#[test]
fn the_shipped_k400_multigrid_config_gives_the_papers_schedule() {
    let i = import(
        fixture("Kinetics_SLOWFAST_8x8_R50_stepwise_multigrid.yaml"),
        &[],
    )
    .unwrap();
    let c = &i.config;
    assert_eq!(i.world_size, 8);
    assert_eq!((c.data.num_frames, c.data.sampling_rate), (32, 2));
    assert_eq!((c.data.train_crop_size, c.data.test_crop_size), (224, 224));
    assert_eq!(c.train.batch_size, 64);
    assert_eq!(c.solver.lr_policy, LrPolicy::StepsWithRelativeLrs);
    assert_eq!(
        (c.solver.steps.clone(), c.solver.max_epoch),
        (vec![0, 94, 154, 196], 239)
    );
    assert_eq!(
        (c.solver.warmup_epochs, c.solver.warmup_start_lr),
        (34.0, 0.01)
    );
    assert!(c.multigrid.long_cycle && c.multigrid.short_cycle);
    assert_eq!(c.multigrid.bn_base_size, 8);
    assert!(c.run.precise_bn && c.run.auto_resume);
    assert_eq!(
        (c.run.seed, c.run.num_workers, c.run.eval_batch_size),
        (0, 8, 8)
    );
    assert_eq!(
        (c.model.alpha, c.model.beta_inv, c.model.fusion_kernel_sz),
        (4, 8, 7)
    );
    assert!(c.model.zero_init_final_bn && !c.data.reverse_input_channel);
    assert_eq!(i.output_dir, PathBuf::from("."));
    assert_eq!(i.init_from, None);
    // Spec 1.5, the schedule of PySlowFast's log in issue #231.
    let s = Schedule::new(c.clone()).unwrap();
    assert_eq!(
        s.steps(),
        [0, 73, 110, 142, 158, 205, 228, 248, 259, 291, 308, 322, 329, 343]
    );
    assert_eq!(s.max_epoch(), 358);
    let groups: Vec<u32> = (0..4).map(|k| s.bn_grouping(k, 8).groups).collect();
    assert_eq!(groups, [8, 4, 2, 1]);
    assert_eq!(i.warnings, Vec::<String>::new());
}

#[test]
fn the_shipped_charades_and_ssv2_multigrid_configs_give_the_specs_schedules() {
    let i = import(fixture("Charades_SLOWFAST_16x8_R50_multigrid.yaml"), &[]).unwrap();
    let c = &i.config;
    assert_eq!(c.train.dataset, DatasetKind::Charades);
    assert!(c.data.multi_label && c.data.reverse_input_channel && c.data.inv_uniform_sample);
    assert_eq!(c.model.loss_func, LossFunc::BceLogit);
    assert_eq!(c.model.head_act, HeadAct::Sigmoid);
    assert_eq!(c.data.ensemble_method, EnsembleMethod::Max);
    assert_eq!((c.model.num_classes, c.train.batch_size), (157, 16));
    assert_eq!(c.data.train_jitter_scales, [256, 340]);
    assert_eq!(i.init_from, Some(PathBuf::from("SLOWFAST_8x8_R50.pkl")));
    // A .pkl is read as Caffe2 by --init-from: nothing to warn about.
    assert!(
        !i.warnings.iter().any(|w| w.contains("caffe2")),
        "{:?}",
        i.warnings
    );
    assert!(
        i.warnings
            .iter()
            .any(|w| w.starts_with("ignored") && w.contains("LOG_MODEL_INFO")),
        "{:?}",
        i.warnings
    );
    // Spec 1.15; BN as spec 1.10's example (2 clips per GPU on 8 GPUs).
    let s = Schedule::new(c.clone()).unwrap();
    assert_eq!(s.steps(), [0, 31, 47, 60, 67, 73, 76, 79, 80, 83]);
    assert_eq!(s.max_epoch(), 86);
    let bn: Vec<(u32, u32)> = (0..4)
        .map(|k| {
            let g = s.bn_grouping(k, 8);
            (g.groups, g.sync_ranks)
        })
        .collect();
    assert_eq!(bn, [(2, 1), (1, 1), (1, 2), (1, 4)]);

    let i = import(fixture("SSv2_SLOWFAST_16x8_R50_multigrid.yaml"), &[]).unwrap();
    let c = &i.config;
    assert_eq!(
        (c.train.dataset, c.model.num_classes),
        (DatasetKind::Ssv2, 174)
    );
    assert!(!c.data.random_flip && c.data.reverse_input_channel);
    assert_eq!(
        (c.run.test_num_temporal_views, c.run.test_num_spatial_crops),
        (1, 1)
    );
    assert_eq!(
        (c.solver.weight_decay, c.solver.warmup_epochs),
        (1e-6, 0.19)
    );
    assert_eq!(Schedule::new(c.clone()).unwrap().max_epoch(), 33);
}

#[test]
fn bn_norm_type_without_the_long_cycle_sets_the_bn_group() {
    // K400 cosine: BatchNorm over a GPU's 64 / 8 clips.
    let i = import(fixture("Kinetics_SLOWFAST_8x8_R50.yaml"), &[]).unwrap();
    assert_eq!(i.config.solver.lr_policy, LrPolicy::Cosine);
    assert_eq!(i.config.multigrid.bn_base_size, 8);
    let s = Schedule::new(i.config.clone()).unwrap();
    assert_eq!(s.bn_grouping(0, 8).groups, 1);
    assert_eq!(s.bn_grouping(0, 1).groups, 8);
    let sub = opts(&["BN.NORM_TYPE", "sub_batchnorm", "BN.NUM_SPLITS", "2"]);
    let i = import(fixture("Kinetics_SLOWFAST_8x8_R50.yaml"), &sub).unwrap();
    assert_eq!(i.config.multigrid.bn_base_size, 4);
    let bad = opts(&["BN.NORM_TYPE", "sub_batchnorm", "BN.NUM_SPLITS", "3"]);
    let e = import(fixture("Kinetics_SLOWFAST_8x8_R50.yaml"), &bad).unwrap_err();
    assert!(e.to_string().contains("BN.NUM_SPLITS = 3"), "{e}");
    // Charades without multigrid: sync BN over 4 GPUs of 2 clips.
    let i = import(fixture("Charades_SLOWFAST_16x8_R50.yaml"), &[]).unwrap();
    assert_eq!(i.config.multigrid.bn_base_size, 8);
    assert_eq!(i.config.multigrid.bn_sync_devices, 4);
    assert_eq!(i.world_size, 8);
    assert!(
        !i.warnings.iter().any(|w| w.contains("sync_batchnorm")),
        "{:?}",
        i.warnings
    );
    let s = Schedule::new(i.config.clone()).unwrap();
    assert_eq!(s.bn_grouping(0, 1).groups, 2);
    let on8 = s.bn_grouping(0, 8);
    assert_eq!((on8.groups, on8.sync_ranks), (1, 4));
    let p = multigrid::Plan::new(&s, 1000, 8, 0, 0).unwrap();
    assert_eq!(p.step(0).unwrap().bn_sync_ranks, 4);
    // SSv2's baseline is the same.
    let i = import(fixture("SSv2_SLOWFAST_16x8_R50.yaml"), &[]).unwrap();
    assert_eq!(i.config.multigrid.bn_sync_devices, 4);
    // BN.GLOBAL_SYNC: every GPU of the machine.
    let i = import(
        fixture("Charades_SLOWFAST_16x8_R50.yaml"),
        &opts(&["BN.GLOBAL_SYNC", "True"]),
    )
    .unwrap();
    assert_eq!(i.config.multigrid.bn_sync_devices, 8);
    assert_eq!(i.config.multigrid.bn_base_size, 16);
    let s = Schedule::new(i.config.clone()).unwrap();
    assert_eq!(s.bn_grouping(0, 8).sync_ranks, 8);
    let e = import(
        fixture("Charades_SLOWFAST_16x8_R50.yaml"),
        &opts(&["BN.GLOBAL_SYNC", "True", "NUM_SHARDS", "2"]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("BN.GLOBAL_SYNC"), "{e}");
    // The multigrid config's sync_batchnorm is the long cycle's business.
    let i = import(fixture("Charades_SLOWFAST_16x8_R50_multigrid.yaml"), &[]).unwrap();
    assert_eq!(i.config.multigrid.bn_sync_devices, 1);
    let e = import(
        fixture("Charades_SLOWFAST_16x8_R50_multigrid.yaml"),
        &opts(&["BN.GLOBAL_SYNC", "True"]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("BN.GLOBAL_SYNC"), "{e}");
}

#[test]
fn base_inheritance_and_key_value_opts_reach_our_config() {
    let i = import(fixture("child.yaml"), &[]).unwrap();
    assert_eq!((i.config.train.batch_size, i.world_size), (32, 4));
    assert_eq!(i.config.solver.base_lr, 0.05);
    assert!(i.config.multigrid.long_cycle && !i.config.multigrid.short_cycle);
    let i = import(fixture("grandchild.yaml"), &[]).unwrap();
    assert_eq!(
        (i.config.data.num_frames, i.config.data.sampling_rate),
        (16, 4)
    );
    assert_eq!(i.config.data.train_jitter_scales, [256, 340]);
    assert_eq!(i.config.solver.base_lr, 0.05);
    assert_eq!(
        i.warnings,
        ["ignored (they change nothing multigrid computes): TENSORBOARD.ENABLE"]
    );
    let kv = opts(&[
        "MULTIGRID.LONG_CYCLE",
        "True",
        "TRAIN.BATCH_SIZE",
        "128",
        "SOLVER.BASE_LR",
        "0.2",
        "DATA.PATH_TO_DATA_DIR",
        "/data/k400",
    ]);
    let (c, warnings) =
        Config::from_pyslowfast_yaml(fixture("Kinetics_SLOWFAST_8x8_R50_stepwise.yaml"), &kv)
            .unwrap();
    assert!(c.multigrid.long_cycle && !c.multigrid.short_cycle);
    assert_eq!((c.train.batch_size, c.solver.base_lr), (128, 0.2));
    assert_eq!(c.run.data_dir, "/data/k400");
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn num_gpus_and_num_shards_keep_pyslowfasts_meaning_for_the_batch() {
    // TRAIN.BATCH_SIZE is one shard's batch over its NUM_GPUS.
    let kv = opts(&["NUM_GPUS", "4", "NUM_SHARDS", "2", "TRAIN.BATCH_SIZE", "32"]);
    let i = import(
        fixture("Kinetics_SLOWFAST_8x8_R50_stepwise_multigrid.yaml"),
        &kv,
    )
    .unwrap();
    assert_eq!((i.config.train.batch_size, i.world_size), (64, 8));
    assert_eq!(i.config.run.eval_batch_size, 16);
    // SOLVER.BASE_LR_SCALE_NUM_SHARDS, applied as assert_and_infer_cfg does.
    let kv = opts(&["NUM_SHARDS", "2", "SOLVER.BASE_LR_SCALE_NUM_SHARDS", "True"]);
    let i = import(
        fixture("Kinetics_SLOWFAST_8x8_R50_stepwise_multigrid.yaml"),
        &kv,
    )
    .unwrap();
    assert_eq!(
        (i.config.solver.base_lr, i.config.solver.warmup_start_lr),
        (0.2, 0.02)
    );
    assert_eq!((i.config.train.batch_size, i.world_size), (128, 16));
    // NUM_GPUS 0 is PySlowFast's CPU run.
    let kv = opts(&["NUM_GPUS", "0"]);
    let i = import(
        fixture("Kinetics_SLOWFAST_8x8_R50_stepwise_multigrid.yaml"),
        &kv,
    )
    .unwrap();
    assert_eq!((i.config.train.batch_size, i.world_size), (64, 1));
    assert_eq!(i.config.run.device.to_string(), "cpu");
    let kv = opts(&["TRAIN.BATCH_SIZE", "30"]);
    let e = import(
        fixture("Kinetics_SLOWFAST_8x8_R50_stepwise_multigrid.yaml"),
        &kv,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("TRAIN.BATCH_SIZE 30") && e.to_string().contains("NUM_GPUS 8"),
        "{e}"
    );
}

#[test]
fn unknown_and_unsupported_keys_are_errors_that_name_them() {
    let k400 = fixture("Kinetics_SLOWFAST_8x8_R50_stepwise_multigrid.yaml");
    let e = import(&k400, &opts(&["TRAIN.BATCH", "64"])).unwrap_err();
    assert!(
        e.to_string()
            .contains("TRAIN.BATCH: not a key of PySlowFast's config"),
        "{e}"
    );
    let dir = std::env::temp_dir().join(format!("mg-config-yaml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let typo = dir.join("typo.yaml");
    std::fs::write(
        &typo,
        format!("_BASE_: {}\nSOLVER:\n  BASE_LRR: 0.1\n", k400.display()),
    )
    .unwrap();
    let e = import(&typo, &[]).unwrap_err().to_string();
    assert!(
        e.contains("typo.yaml") && e.contains("SOLVER.BASE_LRR"),
        "{e}"
    );
    let cycle = dir.join("cycle.yaml");
    std::fs::write(&cycle, "_BASE_: cycle.yaml\n").unwrap();
    let e = import(&cycle, &[]).unwrap_err().to_string();
    assert!(e.contains("_BASE_ files nest more than"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
    // PySlowFast keys whose values we do not implement: all of them in one error.
    let kv = opts(&[
        "MODEL.ARCH",
        "i3d",
        "MIXUP.ENABLE",
        "True",
        "RESNET.NUM_GROUPS",
        "32",
    ]);
    let e = import(&k400, &kv).unwrap_err().to_string();
    for key in [
        "MODEL.ARCH = \"i3d\"",
        "MIXUP.ENABLE = true",
        "RESNET.NUM_GROUPS = 32",
    ] {
        assert!(e.contains(key), "{key}: {e}");
    }
    // R101's 6 temporal blocks of 23 in res4 are not our model.
    let kv = opts(&["RESNET.DEPTH", "101"]);
    let e = import(&k400, &kv).unwrap_err().to_string();
    assert!(e.contains("RESNET.NUM_BLOCK_TEMP_KERNEL"), "{e}");
    // A value our config refuses names PySlowFast's key too.
    let e = import(&k400, &opts(&["MODEL.LOSS_FUNC", "mse"]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.loss_func") && e.contains("MODEL.LOSS_FUNC"),
        "{e}"
    );
}

#[test]
fn tensorboard_and_other_inert_keys_warn_in_one_line() {
    let kv = opts(&[
        "TENSORBOARD.ENABLE",
        "True",
        "DATA_LOADER.PIN_MEMORY",
        "False",
    ]);
    let i = import(fixture("Kinetics_SLOWFAST_8x8_R50.yaml"), &kv).unwrap();
    assert_eq!(
        i.warnings,
        ["ignored (they change nothing multigrid computes): DATA_LOADER.PIN_MEMORY, TENSORBOARD.ENABLE"]
    );
}

/// Ours written under PySlowFast's names (an exported checkpoint's cfg) reads back as ours:
/// the same config, BN groups the same on the world it was written for.
#[test]
fn our_config_written_as_pyslowfasts_reads_back() {
    let dir = std::env::temp_dir().join(format!("mg-config-yaml-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in [
        "Kinetics_SLOWFAST_8x8_R50.yaml",
        "Kinetics_SLOWFAST_8x8_R50_stepwise_multigrid.yaml",
        "Charades_SLOWFAST_16x8_R50.yaml",
        "Charades_SLOWFAST_16x8_R50_multigrid.yaml",
        "SSv2_SLOWFAST_16x8_R50_multigrid.yaml",
        "grandchild.yaml",
    ] {
        let first = import(fixture(name), &[]).unwrap();
        let cfg = to_pyslowfast(&first.config, first.world_size);
        // JSON is YAML.
        let path = dir.join(name);
        std::fs::write(&path, cfg.to_string()).unwrap();
        let back = pyslowfast::import(&path, &[]).unwrap();
        assert_eq!(back.world_size, first.world_size, "{name}");
        let (a, b) = (
            Schedule::new(first.config.clone()).unwrap(),
            Schedule::new(back.config.clone()).unwrap(),
        );
        for k in 0..a.stages().len() {
            assert_eq!(
                a.bn_grouping(k, first.world_size),
                b.bn_grouping(k, first.world_size),
                "{name}"
            );
        }
        let mut back = back.config;
        back.multigrid.bn_base_size = first.config.multigrid.bn_base_size;
        assert_eq!(back, first.config, "{name}");
    }
    let c = Config::default();
    let cfg = to_pyslowfast(&c, 1);
    assert_eq!(cfg["DATA"]["MEAN"][0], serde_json::json!(0.45));
    assert_eq!(cfg["BN"]["NORM_TYPE"], "sub_batchnorm");
    assert_eq!(
        cfg["RESNET"]["NUM_BLOCK_TEMP_KERNEL"],
        serde_json::json!([[3, 3], [4, 4], [6, 6], [3, 3]])
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A SlowFast work tree ($MG_PYSLOWFAST, else /tmp/SlowFast) when one is here: its shipped
/// YAMLs are then read too. The tests pass without one, on the YAML written below.
fn pyslowfast_checkout() -> Option<PathBuf> {
    let dir = std::env::var_os("MG_PYSLOWFAST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/SlowFast"));
    dir.join("configs/Kinetics").is_dir().then_some(dir)
}

/// The network keys of PySlowFast's configs/Kinetics/{C2D,I3D,SLOW}[_NLN]_8x8_R50.yaml (all
/// their other keys are the same in the five), as one-pathway YAML.
fn single_pathway_yaml(arch: &str, nonlocal: bool, instantiation: &str) -> String {
    let location = if nonlocal {
        "[[[]], [[1, 3]], [[1, 3, 5]], [[]]]"
    } else {
        "[[[]], [[]], [[]], [[]]]"
    };
    format!(
        "DATA:\n  NUM_FRAMES: 8\n  SAMPLING_RATE: 8\n  INPUT_CHANNEL_NUM: [3]\n\
         RESNET:\n  ZERO_INIT_FINAL_BN: True\n  DEPTH: 50\n  TRANS_FUNC: bottleneck_transform\n  \
         NUM_BLOCK_TEMP_KERNEL: [[3], [4], [6], [3]]\n\
         NONLOCAL:\n  LOCATION: {location}\n  GROUP: [[1], [1], [1], [1]]\n  \
         INSTANTIATION: {instantiation}\n\
         MODEL:\n  ARCH: {arch}\n  MODEL_NAME: ResNet\n"
    )
}

/// (file, MODEL.ARCH, non-local blocks, NONLOCAL.INSTANTIATION) of the shipped R50 configs.
const SINGLE_PATHWAY_R50: &[(&str, &str, bool, &str)] = &[
    ("C2D_8x8_R50.yaml", "c2d", false, "softmax"),
    ("I3D_8x8_R50.yaml", "i3d", false, "softmax"),
    ("I3D_NLN_8x8_R50.yaml", "i3d", true, "softmax"),
    ("SLOW_8x8_R50.yaml", "slow", false, "dot_product"),
    ("SLOW_NLN_8x8_R50.yaml", "slow", true, "dot_product"),
];

/// The keys that decide PySlowFast's network: an exported cfg must hold the YAML's.
const NETWORK_KEYS: &[&str] = &[
    "MODEL.ARCH",
    "MODEL.MODEL_NAME",
    "MODEL.NUM_CLASSES",
    "MODEL.DROPOUT_RATE",
    "NONLOCAL.LOCATION",
    "NONLOCAL.GROUP",
    "NONLOCAL.POOL",
    "NONLOCAL.INSTANTIATION",
    "RESNET.DEPTH",
    "RESNET.TRANS_FUNC",
    "RESNET.WIDTH_PER_GROUP",
    "RESNET.ZERO_INIT_FINAL_BN",
    "RESNET.NUM_BLOCK_TEMP_KERNEL",
    "RESNET.SPATIAL_STRIDES",
    "RESNET.SPATIAL_DILATIONS",
    "DATA.INPUT_CHANNEL_NUM",
    "DATA.NUM_FRAMES",
    "SLOWFAST.ALPHA",
    "SLOWFAST.BETA_INV",
    "SLOWFAST.FUSION_CONV_CHANNEL_RATIO",
    "SLOWFAST.FUSION_KERNEL_SZ",
];

fn exported<'a>(cfg: &'a Value, key: &str) -> &'a Value {
    key.split('.').fold(cfg, |node, part| &node[part])
}

/// Import `path`, check the arch and non-local fields, export, and check that the exported
/// cfg holds the YAML's network keys and reads back as the same config. Gives the config.
fn import_export_round_trip(
    path: &Path,
    dir: &Path,
    arch: &str,
    nonlocal: bool,
    instantiation: &str,
) -> Config {
    let name = path.display();
    let theirs = PySlowFastCfg::load(path, &[]).unwrap();
    let i = import(path, &[]).unwrap();
    assert_eq!(i.warnings, Vec::<String>::new(), "{name}");
    let m = &i.config.model;
    assert_eq!(m.arch.as_str(), arch, "{name}");
    assert_eq!(m.pathways(), 1, "{name}");
    assert_eq!(m.nonlocal_instantiation.as_str(), instantiation, "{name}");
    let want: Vec<Vec<Vec<u32>>> = if nonlocal {
        vec![
            vec![vec![]],
            vec![vec![1, 3]],
            vec![vec![1, 3, 5]],
            vec![vec![]],
        ]
    } else {
        vec![]
    };
    assert_eq!(m.nonlocal_location, want, "{name}");
    assert!(
        m.nonlocal_group.is_empty() && m.nonlocal_pool.is_empty(),
        "{name}"
    );
    let out = to_pyslowfast(&i.config, i.world_size);
    for key in NETWORK_KEYS {
        assert_eq!(
            normal(exported(&out, key)),
            normal(theirs.get(key).unwrap()),
            "{name}: {key}"
        );
    }
    let file = dir.join(format!("{arch}-{nonlocal}-exported.yaml"));
    std::fs::write(&file, out.to_string()).unwrap();
    let back = import(&file, &[]).unwrap();
    // (MULTIGRID.BN_BASE_SIZE, written always, warns without the long cycle.)
    assert!(
        !back.warnings.iter().any(|w| w.starts_with("ignored")),
        "{name}: {:?}",
        back.warnings
    );
    let mut back = back.config;
    back.multigrid.bn_base_size = i.config.multigrid.bn_base_size;
    assert_eq!(back, i.config, "{name}");
    i.config
}

/// c2d, i3d and slow, with and without non-local blocks: PySlowFast's YAML (written here,
/// and the shipped files when a SlowFast checkout is present) -> our arch and non-local
/// fields -> the exported cfg holds the YAML's MODEL.ARCH, NONLOCAL.*, RESNET.* per-pathway
/// lists and DATA.INPUT_CHANNEL_NUM, and reads back as the same config.
#[test]
fn single_pathway_arches_and_nonlocal_blocks_round_trip_through_pyslowfasts_cfg() {
    let dir = std::env::temp_dir().join(format!("mg-config-yaml-arch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let checkout = pyslowfast_checkout();
    for &(file, arch, nonlocal, inst) in SINGLE_PATHWAY_R50 {
        let path = dir.join(file);
        std::fs::write(&path, single_pathway_yaml(arch, nonlocal, inst)).unwrap();
        let ours = import_export_round_trip(&path, &dir, arch, nonlocal, inst);
        let Some(sf) = &checkout else { continue };
        let shipped = sf.join("configs/Kinetics").join(file);
        let (a, b) = (
            PySlowFastCfg::load(&path, &[]).unwrap(),
            PySlowFastCfg::load(&shipped, &[]).unwrap(),
        );
        for key in NETWORK_KEYS {
            assert_eq!(a.get(key), b.get(key), "{file}: {key}");
        }
        let theirs = import_export_round_trip(&shipped, &dir, arch, nonlocal, inst);
        assert_eq!(theirs.model, ours.model, "{file}");
    }
    // R101: a temporal kernel in all 23 res4 blocks.
    if let Some(sf) = &checkout {
        for (file, nonlocal) in [
            ("I3D_8x8_R101.yaml", false),
            ("I3D_NLN_8x8_R101.yaml", true),
        ] {
            let path = sf.join("configs/Kinetics").join(file);
            let c = import_export_round_trip(&path, &dir, "i3d", nonlocal, "softmax");
            assert_eq!(c.model.depth, 101, "{file}");
            let out = to_pyslowfast(&c, 8);
            assert_eq!(
                out["RESNET"]["NUM_BLOCK_TEMP_KERNEL"],
                serde_json::json!([[3], [4], [23], [3]])
            );
        }
    }
    // GROUP and POOL other than their defaults: POOL's first entry per stage is the one a
    // single pathway reads; both written back with one entry per stage.
    let path = dir.join("I3D_NLN_8x8_R50.yaml");
    let kv = opts(&[
        "NONLOCAL.GROUP",
        "[[1], [2], [2], [1]]",
        "NONLOCAL.POOL",
        "[[[1, 2, 2], [1, 2, 2]], [[2, 2, 2], [1, 1, 1]], [[1, 1, 1], [1, 2, 2]], [[1, 2, 2], [1, 2, 2]]]",
    ]);
    let i = import(&path, &kv).unwrap();
    let m = &i.config.model;
    assert_eq!(m.nonlocal_group, [[1], [2], [2], [1]]);
    assert_eq!(
        m.nonlocal_pool,
        [[[1, 2, 2]], [[2, 2, 2]], [[1, 1, 1]], [[1, 2, 2]]]
    );
    let out = to_pyslowfast(&i.config, i.world_size);
    assert_eq!(
        out["NONLOCAL"]["GROUP"],
        serde_json::json!([[1], [2], [2], [1]])
    );
    assert_eq!(
        out["NONLOCAL"]["POOL"],
        serde_json::json!([[[1, 2, 2]], [[2, 2, 2]], [[1, 1, 1]], [[1, 2, 2]]])
    );
    let file = dir.join("grouped.yaml");
    std::fs::write(&file, out.to_string()).unwrap();
    let mut back = import(&file, &[]).unwrap().config;
    back.multigrid.bn_base_size = i.config.multigrid.bn_base_size;
    assert_eq!(back, i.config);
    // SLOWFAST.* is unused by PySlowFast's ResNet: a changed value is a warning, not a field.
    let i = import(&path, &opts(&["SLOWFAST.ALPHA", "4"])).unwrap();
    assert!(
        i.warnings
            .iter()
            .any(|w| w.starts_with("ignored") && w.contains("SLOWFAST.ALPHA")),
        "{:?}",
        i.warnings
    );
    // SlowFast keeps its two-pathway lists.
    let i = import(fixture("Kinetics_SLOWFAST_8x8_R50.yaml"), &[]).unwrap();
    let out = to_pyslowfast(&i.config, i.world_size);
    assert_eq!(
        (&out["MODEL"]["ARCH"], &out["MODEL"]["MODEL_NAME"]),
        (
            &serde_json::json!("slowfast"),
            &serde_json::json!("SlowFast")
        )
    );
    assert_eq!(
        out["NONLOCAL"]["LOCATION"],
        serde_json::json!([[[], []], [[], []], [[], []], [[], []]])
    );
    assert_eq!(out["DATA"]["INPUT_CHANNEL_NUM"], serde_json::json!([3, 3]));
    let _ = std::fs::remove_dir_all(&dir);
}

/// MODEL.ARCH and MODEL.MODEL_NAME come in PySlowFast's pairs; the per-pathway lists have
/// the arch's pathways (SlowFast-NL's two): errors name the key.
#[test]
fn wrong_arch_pairs_pathway_lists_and_nonlocal_on_slowfast_are_errors_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("mg-config-yaml-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let i3d = dir.join("I3D_NLN_8x8_R50.yaml");
    std::fs::write(&i3d, single_pathway_yaml("i3d", true, "softmax")).unwrap();
    let k400 = fixture("Kinetics_SLOWFAST_8x8_R50.yaml");
    let err = |path: &Path, kv: &[&str]| import(path, &opts(kv)).unwrap_err().to_string();
    let e = err(&i3d, &["MODEL.MODEL_NAME", "SlowFast"]);
    assert!(
        e.contains("MODEL.ARCH = \"i3d\" with MODEL.MODEL_NAME = \"SlowFast\""),
        "{e}"
    );
    let e = err(&k400, &["MODEL.MODEL_NAME", "ResNet"]);
    assert!(
        e.contains("MODEL.ARCH = \"slowfast\" with MODEL.MODEL_NAME = \"ResNet\""),
        "{e}"
    );
    let e = err(&i3d, &["MODEL.ARCH", "x3d", "MODEL.MODEL_NAME", "X3D"]);
    assert!(e.contains("MODEL.ARCH = \"x3d\""), "{e}");
    // SlowFast-NL (SLOWFAST_NLN_8x8_R50.yaml's blocks, on the slow pathway) imports and
    // exports as it is; a list of one pathway's entries does not.
    let nln = "[[[], []], [[1, 3], []], [[1, 3, 5], []], [[], []]]";
    let i = import(
        &k400,
        &opts(&[
            "NONLOCAL.LOCATION",
            nln,
            "NONLOCAL.GROUP",
            "[[1, 1], [1, 1], [1, 1], [1, 1]]",
        ]),
    )
    .unwrap();
    assert_eq!(
        i.config.model.nonlocal_location,
        [
            vec![vec![], vec![]],
            vec![vec![1, 3], vec![]],
            vec![vec![1, 3, 5], vec![]],
            vec![vec![], vec![]]
        ]
    );
    let out = to_pyslowfast(&i.config, i.world_size);
    let want: serde_json::Value = serde_json::from_str(nln).unwrap();
    assert_eq!(out["NONLOCAL"]["LOCATION"], want);
    let e = err(
        &k400,
        &["NONLOCAL.LOCATION", "[[[]], [[1, 3]], [[]], [[]]]"],
    );
    assert!(
        e.contains("NONLOCAL.LOCATION") && e.contains("slowfast"),
        "{e}"
    );
    // One entry per pathway: SlowFast's two-pathway lists are not I3D's.
    let e = err(&i3d, &["DATA.INPUT_CHANNEL_NUM", "[3, 3]"]);
    assert!(e.contains("DATA.INPUT_CHANNEL_NUM = [3,3]"), "{e}");
    let e = err(
        &i3d,
        &[
            "RESNET.NUM_BLOCK_TEMP_KERNEL",
            "[[3, 3], [4, 4], [6, 6], [3, 3]]",
        ],
    );
    assert!(e.contains("RESNET.NUM_BLOCK_TEMP_KERNEL"), "{e}");
    let e = err(&i3d, &["RESNET.SPATIAL_STRIDES", "[[1], [2], [1], [2]]"]);
    assert!(e.contains("RESNET.SPATIAL_STRIDES"), "{e}");
    // R101 with the default [[3], [4], [6], [3]]: 6 temporal blocks of 23 are not ours.
    let e = err(&i3d, &["RESNET.DEPTH", "101"]);
    assert!(e.contains("RESNET.NUM_BLOCK_TEMP_KERNEL"), "{e}");
    let e = err(
        &i3d,
        &[
            "NONLOCAL.LOCATION",
            "[[[], []], [[1, 3], []], [[], []], [[], []]]",
        ],
    );
    assert!(e.contains("NONLOCAL.LOCATION"), "{e}");
    let e = err(&i3d, &["NONLOCAL.LOCATION", "[[[]], [[1, 7]], [[]], [[]]]"]);
    assert!(
        e.contains("block 7 of res3") && e.contains("NONLOCAL.LOCATION"),
        "{e}"
    );
    let e = err(
        &i3d,
        &["NONLOCAL.GROUP", "[[1, 1], [1, 1], [1, 1], [1, 1]]"],
    );
    assert!(e.contains("NONLOCAL.GROUP"), "{e}");
    let e = err(
        &i3d,
        &[
            "NONLOCAL.POOL",
            "[[[1, 2, 2]], [[1, 2]], [[1, 2, 2]], [[1, 2, 2]]]",
        ],
    );
    assert!(e.contains("NONLOCAL.POOL"), "{e}");
    let e = err(&i3d, &["NONLOCAL.INSTANTIATION", "embedded_gaussian"]);
    assert!(
        e.contains("model.nonlocal_instantiation") && e.contains("NONLOCAL.INSTANTIATION"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// configs/kinetics_i3d{,_nln}_8x8_r50_{multigrid,stepwise}.json: PySlowFast's
/// I3D{,_NLN}_8x8_R50.yaml with the stepwise recipe of its SlowFast multigrid config, read by
/// our importer; the same schedule as the SlowFast multigrid config (spec 1.5), one pathway.
#[test]
fn the_i3d_multigrid_configs_are_pyslowfasts_i3d_yamls_with_the_multigrid_recipe() {
    let shipped = |name: &str| {
        Config::from_file(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("configs")
                .join(name),
        )
        .unwrap()
    };
    let slowfast = Schedule::new(shipped("kinetics_slowfast_8x8_r50_multigrid.json")).unwrap();
    let recipe = [
        "SOLVER.LR_POLICY",
        "steps_with_relative_lrs",
        "SOLVER.LRS",
        "[1, 0.1, 0.01, 0.001, 0.0001, 0.00001]",
        "SOLVER.STEPS",
        "[0, 94, 154, 196]",
        "SOLVER.MAX_EPOCH",
        "239",
    ];
    let multigrid = [
        "MULTIGRID.LONG_CYCLE",
        "True",
        "MULTIGRID.SHORT_CYCLE",
        "True",
        "DATA.TEST_CROP_SIZE",
        "224",
    ];
    for (yaml, stem, nonlocal) in [
        ("I3D_8x8_R50.yaml", "kinetics_i3d_8x8_r50", false),
        ("I3D_NLN_8x8_R50.yaml", "kinetics_i3d_nln_8x8_r50", true),
    ] {
        let mg = shipped(&format!("{stem}_multigrid.json"));
        let base = shipped(&format!("{stem}_stepwise.json"));
        assert_eq!(mg.model.arch.as_str(), "i3d");
        assert_eq!(mg.model.nonlocal_location.is_empty(), !nonlocal, "{stem}");
        assert_eq!((mg.data.num_frames, mg.data.sampling_rate), (8, 8));
        assert!(mg.multigrid.long_cycle && mg.multigrid.short_cycle);
        assert!(!base.multigrid.long_cycle && !base.multigrid.short_cycle);
        assert_eq!(
            (base.model.clone(), base.solver.clone()),
            (mg.model.clone(), mg.solver.clone())
        );
        let s = Schedule::new(mg.clone()).unwrap();
        assert_eq!(s.steps(), slowfast.steps(), "{stem}");
        assert_eq!(s.max_epoch(), 358);
        let frames: Vec<u32> = s.stages().iter().map(|st| st.num_frames).collect();
        assert_eq!(frames[..4], [2, 4, 4, 8], "{stem}");
        let Some(sf) = pyslowfast_checkout() else {
            continue;
        };
        let path = sf.join("configs/Kinetics").join(yaml);
        for (kv, ours) in [
            ([&recipe[..], &multigrid[..]].concat(), &mg),
            (recipe.to_vec(), &base),
        ] {
            let mut want = import(&path, &opts(&kv)).unwrap().config;
            // The shipped configs leave run.* (workers, eval batch) to the user, as the
            // SlowFast ones do.
            want.run = ours.run.clone();
            assert_eq!(&want, ours, "{stem} from {yaml} {kv:?}");
        }
    }
}
