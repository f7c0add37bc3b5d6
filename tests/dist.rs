//! Data-parallel training on the CPU: ranks are separate processes started by mpirun (through
//! `train --nproc-per-node`), on loopback only. Two ranks must train what one process trains
//! with twice the batch, write one set of outputs, die together, resume exactly and evaluate
//! every clip once.
#![cfg(all(feature = "torch", feature = "mpi"))]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_multigrid"))
}

/// 100 clips (80 train); global batch 8 with BN over 4 clips, so one process has 2 BN groups
/// where each of 2 ranks has 1, and 4 where each rank has 2 (the long cycle's first stage).
/// 26 steps over 3 stages: shapes and BN groups change.
fn setup(name: &str) -> (PathBuf, PathBuf) {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("data");
    common::gen_store(&data, 100);
    let config = serde_json::json!({
        "data": {"num_frames": 8, "sampling_rate": 1, "train_jitter_scales": [34, 40], "train_crop_size": 32, "test_crop_size": 32},
        "train": {"batch_size": 8, "checkpoint_period": 1},
        "solver": {"base_lr": 0.02, "lr_policy": "steps_with_relative_lrs", "lrs": [1, 0.1], "steps": [0, 4], "max_epoch": 8},
        "multigrid": {"long_cycle": true, "short_cycle": true, "bn_base_size": 4,
                      "long_cycle_factors": [[0.5, std::f64::consts::FRAC_1_SQRT_2], [1, 1]]},
        "model": {"depth": 18, "width_per_group": 8, "alpha": 2, "num_classes": 12, "dropout_rate": 0.0},
        "run": {"device": "cpu", "data_dir": data, "precise_bn_batches": 2, "test_num_temporal_views": 1,
                "test_num_spatial_crops": 1, "keep_checkpoints": 100, "log_period": 1, "dist_timeout_s": 60}
    });
    let path = root.join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    (root, path)
}

fn train(config: &Path, out: &Path, nproc: Option<usize>, extra: &[&str]) -> Output {
    let mut cmd = bin();
    cmd.arg("train")
        .arg("--config")
        .arg(config)
        .arg("--output-dir")
        .arg(out)
        .args(extra);
    match nproc {
        Some(n) => cmd.args(["--nproc-per-node", &n.to_string()]),
        // One thread, as each of 2 ranks on 2 cores has: results then differ only by the
        // order of float sums, not by how threads split the convolutions.
        None => cmd.env("OMP_NUM_THREADS", "1"),
    };
    cmd.output().unwrap()
}

/// `mpirun -np N multigrid train ...`, as a user of MPI would start it (no --nproc-per-node).
fn train_mpirun(config: &Path, out: &Path, ranks: usize, extra: &[&str]) -> Output {
    Command::new("mpirun")
        .args([
            "-np",
            &ranks.to_string(),
            "--oversubscribe",
            "--bind-to",
            "none",
        ])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .arg(env!("CARGO_BIN_EXE_multigrid"))
        .arg("train")
        .arg("--config")
        .arg(config)
        .arg("--output-dir")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// An MPMD `mpirun`: one rank per argument list (`multigrid train` with those arguments), so
/// ranks can be given what a real launcher never should. Returns whether it succeeded, its
/// output, and how long it took.
fn train_mpmd(ranks: &[Vec<String>]) -> (bool, String, std::time::Duration) {
    let mut args = vec!["--bind-to".to_string(), "none".into()];
    for (i, r) in ranks.iter().enumerate() {
        if i > 0 {
            args.push(":".into());
        }
        args.extend(["-np", "1", "-x", "OMP_NUM_THREADS=1"].map(String::from));
        args.push(env!("CARGO_BIN_EXE_multigrid").into());
        args.push("train".into());
        args.extend(r.iter().cloned());
    }
    let started = std::time::Instant::now();
    let result = Command::new("mpirun")
        .args(&args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    (result.status.success(), text, started.elapsed())
}

/// A run's stdout and stderr, asserting that it failed.
fn failed(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    text
}

fn ok(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

fn checkpoint_params(dir: &Path) -> Vec<(String, tch::Tensor)> {
    let mut v = tch::Tensor::read_safetensors(dir.join("model.safetensors")).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn last_checkpoint(run: &Path) -> (u64, PathBuf) {
    multigrid::train::checkpoint::list(&run.join("checkpoints"))
        .unwrap()
        .pop()
        .expect("no checkpoint")
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// How far two parameter sets are apart, over all trainable tensors together: the norm of the
/// difference over the norm of `a`, and the largest element difference over the largest
/// element of `a`. Running statistics are compared apart ([`statistics_difference`]), as
/// their scale is not the weights'. (A per-tensor ratio would divide by BN biases that have
/// barely left zero.)
fn relative_difference(a: &[(String, tch::Tensor)], b: &[(String, tch::Tensor)]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let (mut diff2, mut norm2, mut max_diff, mut max_a) = (0.0, 0.0, 0.0f64, 0.0f64);
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        if na.contains("running_") {
            continue;
        }
        let d = (ta - tb).to_kind(tch::Kind::Double);
        diff2 += d.square().sum(tch::Kind::Double).double_value(&[]);
        norm2 += ta
            .to_kind(tch::Kind::Double)
            .square()
            .sum(tch::Kind::Double)
            .double_value(&[]);
        max_diff = max_diff.max(d.abs().max().double_value(&[]));
        max_a = max_a.max(ta.abs().max().double_value(&[]));
    }
    ((diff2 / norm2).sqrt(), max_diff / max_a)
}

/// The largest difference between two sets' BN running statistics, over the largest
/// statistic of `a`.
fn statistics_difference(a: &[(String, tch::Tensor)], b: &[(String, tch::Tensor)]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut max_diff, mut max_a, mut count) = (0.0f64, 0.0f64, 0);
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        if !na.contains("running_") {
            continue;
        }
        count += 1;
        max_diff = max_diff.max((ta - tb).abs().max().double_value(&[]));
        max_a = max_a.max(ta.abs().max().double_value(&[]));
    }
    assert!(count > 0, "no running statistics");
    max_diff / max_a
}

#[test]
fn two_ranks_equal_one_process_with_twice_the_batch() {
    let (root, config) = setup("dist_equivalence");
    let one = root.join("one");
    let two = root.join("two");
    // A small LR: the network is chaotic enough that, at the configs' LR, the last bits of
    // a float sum (one process sums 2B clips, a rank B) flip a max-pool choice within a few
    // steps; at this one, one thread against two already drifts by 1e-4 over 26 steps.
    let lr = ["--set", "solver.base_lr=0.002"];
    ok(&train(&config, &one, None, &lr));
    let text = ok(&train(&config, &two, Some(2), &lr));
    assert!(text.contains("2 ranks (mpi)"), "{text}");

    let m1 = metrics(&one);
    let m2 = metrics(&two);
    let steps = |m: &[serde_json::Value]| {
        m.iter()
            .find(|v| v["type"] == "summary")
            .and_then(|v| v["steps"].as_u64())
            .unwrap()
    };
    assert_eq!(steps(&m1), steps(&m2));
    assert!(steps(&m2) >= 20, "{} steps", steps(&m2));
    // Rank 0 alone writes: one metrics line per logged step, one summary.
    let train_lines: Vec<u64> = m2
        .iter()
        .filter(|v| v["type"] == "train")
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(train_lines, (0..steps(&m2)).collect::<Vec<_>>());
    assert_eq!(m2.iter().filter(|v| v["type"] == "summary").count(), 1);
    // Per-rank shapes are half the single process's, with half its BN groups, and the plan
    // changes both along the way.
    let shapes = |m: &[serde_json::Value]| -> Vec<(u64, u64)> {
        m.iter()
            .filter(|v| v["type"] == "train")
            .map(|v| {
                (
                    v["shape"][0].as_u64().unwrap(),
                    v["bn_groups"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let (s1, s2) = (shapes(&m1), shapes(&m2));
    for ((b1, g1), (b2, g2)) in s1.iter().zip(&s2) {
        assert_eq!((*b1, *g1), (2 * b2, 2 * g2));
    }
    let mut groups: Vec<u64> = s2.iter().map(|s| s.1).collect();
    groups.dedup();
    assert!(groups.len() >= 2, "BN groups never change: {groups:?}");
    let mut batches: Vec<u64> = s2.iter().map(|s| s.0).collect();
    batches.dedup();
    assert!(batches.len() >= 3, "shapes never change: {batches:?}");

    let c1 = multigrid::train::checkpoint::list(&one.join("checkpoints")).unwrap();
    let c2 = multigrid::train::checkpoint::list(&two.join("checkpoints")).unwrap();
    assert_eq!(
        c1.iter().map(|c| c.0).collect::<Vec<_>>(),
        c2.iter().map(|c| c.0).collect::<Vec<_>>()
    );
    // No stray temporary directories from other ranks.
    assert_eq!(
        std::fs::read_dir(two.join("checkpoints")).unwrap().count(),
        c2.len()
    );
    let (norm, element) = relative_difference(
        &checkpoint_params(&c1.last().unwrap().1),
        &checkpoint_params(&c2.last().unwrap().1),
    );
    assert!(
        norm < 1e-5 && element < 1e-5,
        "relative difference {norm:e}, {element:e}"
    );
    // The checkpoints' BN statistics are precise BN's: per rank over its shard, pooled over
    // ranks, against one process's per-group statistics pooled over its groups.
    let stats = statistics_difference(
        &checkpoint_params(&c1.last().unwrap().1),
        &checkpoint_params(&c2.last().unwrap().1),
    );
    assert!(stats < 1e-5, "BN statistics differ by {stats:e}");
    let manifest = multigrid::train::checkpoint::read_manifest(&c2.last().unwrap().1).unwrap();
    assert_eq!(manifest.world_size, 2);

    // Sharded evaluation: two ranks score each clip once, as one process does.
    let eval = |nproc: Option<usize>| {
        let mut cmd = bin();
        cmd.arg("eval")
            .arg("--config")
            .arg(&config)
            .arg("--checkpoint")
            .arg(&c2.last().unwrap().1)
            .args(["--split", "val"]);
        let out = match nproc {
            Some(n) => Command::new("mpirun")
                .args([
                    "-np",
                    &n.to_string(),
                    "--oversubscribe",
                    "--bind-to",
                    "none",
                ])
                .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
                .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
                .arg(cmd.get_program())
                .args(cmd.get_args())
                .output()
                .unwrap(),
            None => cmd.env("OMP_NUM_THREADS", "1").output().unwrap(),
        };
        let text = ok(&out);
        text.lines()
            .filter(|l| l.starts_with("val:"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let single = eval(None);
    let sharded = eval(Some(2));
    assert_eq!(single.len(), 1, "{single:?}");
    assert_eq!(sharded, single, "printed once, with the same counts");
    let val = multigrid::data::Dataset::store(root.join("data/val.mgstore")).unwrap();
    assert!(
        single[0].contains(&format!("over {} clips", val.len())),
        "{single:?}"
    );
}

/// The gradients' all-reduce started from autograd's hooks during backward (the default)
/// trains the same model as the one after backward: bucket by bucket, the same sums.
#[test]
fn overlapped_and_waited_gradient_all_reduce_train_the_same_model() {
    let (root, config) = setup("dist_overlap");
    let (on, off) = (root.join("on"), root.join("off"));
    let lr = "solver.base_lr=0.002";
    ok(&train(&config, &on, Some(2), &["--set", lr]));
    let waited = ["--set", lr, "--set", "run.overlap_grad_reduce=false"];
    ok(&train(&config, &off, Some(2), &waited));
    let last = |run: &Path| {
        let list = multigrid::train::checkpoint::list(&run.join("checkpoints")).unwrap();
        checkpoint_params(&list.last().unwrap().1)
    };
    let (a, b) = (last(&on), last(&off));
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        // Two ranks: every sum is a + b either way, so not a bit differs.
        assert!(ta.equal(tb), "{na} differs");
    }
}

/// The pids of the processes whose parent is `parent`, from /proc.
fn children(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid: u32 = after.split(' ').nth(1).unwrap().parse().unwrap();
        if ppid == parent {
            out.push(pid);
        }
    }
    out
}

/// The rank processes under a `--nproc-per-node` launcher: its mpirun's children.
fn rank_pids(launcher: u32) -> Vec<u32> {
    children(launcher)
        .into_iter()
        .flat_map(children)
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.contains("multigrid") && c.contains("train"))
        })
        .collect()
}

/// One rank started by mpirun with the backend named runs every collective of a step through
/// MPI (broadcast, the bucketed gradient all-reduce, the all-gathers of losses and counts):
/// how a one-GPU machine exercises NCCL. Summed over one rank they change nothing: the
/// parameters equal a plain process's bit for bit.
#[test]
fn one_rank_through_the_engine_equals_one_process() {
    let (root, config) = setup("dist_one_rank");
    let plain = root.join("plain");
    ok(&train(
        &config,
        &plain,
        None,
        &["--set", "solver.max_epoch=5"],
    ));
    let engine = root.join("engine");
    let out = Command::new("mpirun")
        .args(["-np", "1", "--bind-to", "none"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMP_NUM_THREADS", "1")
        .arg(env!("CARGO_BIN_EXE_multigrid"))
        .args(["train", "--config"])
        .arg(&config)
        .arg("--output-dir")
        .arg(&engine)
        .args([
            "--set",
            "solver.max_epoch=5",
            "--set",
            "run.dist_backend=mpi",
        ])
        .output()
        .unwrap();
    let text = ok(&out);
    assert!(text.contains("1 ranks (mpi)"), "{text}");
    let (a, b) = (
        checkpoint_params(&last_checkpoint(&plain).1),
        checkpoint_params(&last_checkpoint(&engine).1),
    );
    assert_eq!(a.len(), b.len());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(
            x.equal(y),
            "{name} differs after collectives at world size 1"
        );
    }
}

/// Two ranks started with different configs (an MPMD mpirun: each rank its own command) fail
/// at start with a message naming the rank and what differs, instead of meeting in mismatched
/// collectives.
#[test]
fn ranks_that_run_different_configs_are_named_at_start() {
    let (root, config) = setup("dist_disagree");
    let out = root.join("run");
    let rank = |lr: &str| -> Vec<String> {
        let c = config.to_string_lossy().into_owned();
        let o = out.to_string_lossy().into_owned();
        let lr = format!("solver.base_lr={lr}");
        ["--config", &c, "--output-dir", &o, "--set", &lr]
            .map(String::from)
            .to_vec()
    };
    let (success, text, took) = train_mpmd(&[rank("0.02"), rank("0.03")]);
    assert!(!success, "{text}");
    assert!(
        text.contains("rank 1's config differs from rank 0's"),
        "{text}"
    );
    assert!(took.as_secs() < 60, "took {took:?}");
}

/// On resume, a rank that cannot see the checkpoint rank 0 chose (an output directory that is
/// not shared) fails every rank promptly with that rank's reason, instead of leaving the
/// others waiting in the next collective until the timeout.
#[test]
fn a_rank_that_cannot_see_the_checkpoint_fails_every_rank_at_once() {
    let (root, config) = setup("dist_unshared");
    let shared = root.join("rank0");
    ok(&train(
        &config,
        &shared,
        None,
        &["--set", "solver.max_epoch=5"],
    ));
    let rank = |out: &Path| -> Vec<String> {
        let c = config.to_string_lossy().into_owned();
        let o = out.to_string_lossy().into_owned();
        ["--resume", "--config", &c, "--output-dir", &o]
            .map(String::from)
            .to_vec()
    };
    let (success, text, took) = train_mpmd(&[rank(&shared), rank(&root.join("rank1-elsewhere"))]);
    assert!(!success, "{text}");
    assert!(
        text.contains("rank 1 cannot see rank 0's checkpoint"),
        "{text}"
    );
    assert!(
        text.contains("another rank could not see rank 0's checkpoint"),
        "{text}"
    );
    // run.dist_timeout_s is 60 in this config: well before it.
    assert!(took.as_secs() < 30, "took {took:?}");
}

/// Rank 0 alone fails to write its metrics (here a full disk: metrics.jsonl leads to
/// /dev/full): every rank ends at that line with the reason, rather than rank 0 returning while
/// the others enter the next collective.
#[cfg(target_os = "linux")]
#[test]
fn rank_0_failing_to_write_metrics_ends_every_rank() {
    let (root, config) = setup("dist_metrics_full");
    let out = root.join("run");
    std::fs::create_dir_all(&out).unwrap();
    std::os::unix::fs::symlink("/dev/full", out.join("metrics.jsonl")).unwrap();
    let started = std::time::Instant::now();
    let text = failed(&train_mpirun(
        &config,
        &out,
        2,
        &["--set", "solver.max_epoch=5"],
    ));
    assert!(text.contains("metrics.jsonl"), "{text}");
    assert!(
        text.contains("another rank could not write its metrics"),
        "{text}"
    );
    assert!(
        started.elapsed().as_secs() < 30,
        "took {:?}",
        started.elapsed()
    );
}

/// `multigrid train --nproc-per-node 2` in the background, its stderr piped.
fn spawn_two_ranks(config: &Path, out: &Path) -> std::process::Child {
    bin()
        .arg("train")
        .arg("--config")
        .arg(config)
        .arg("--output-dir")
        .arg(out)
        .args(["--nproc-per-node", "2"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `run` holds a checkpoint past step 3 and before `total` (the run is then well
/// inside its plan) while `child` runs; returns its step.
fn wait_for_checkpoint_inside(child: &mut std::process::Child, run: &Path, total: u64) -> u64 {
    let start = Instant::now();
    loop {
        let ck = multigrid::train::checkpoint::list(&run.join("checkpoints")).unwrap();
        if let Some(&(s, _)) = ck.iter().find(|(s, _)| *s > 3 && *s < total) {
            return s;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint");
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_killed_rank_ends_the_job_and_two_ranks_resume_exactly() {
    let (root, config) = setup("dist_kill_resume");
    let clean = root.join("clean");
    ok(&train(&config, &clean, Some(2), &[]));
    let (total, clean_last) = last_checkpoint(&clean);

    let killed = root.join("killed");
    let mut child = spawn_two_ranks(&config, &killed);
    wait_for_checkpoint_inside(&mut child, &killed, total);
    let ranks = rank_pids(child.id());
    assert_eq!(ranks.len(), 2, "rank processes: {ranks:?}");
    // SIGKILL one rank: the job must end, non-zero, naming it, well within the timeout.
    let victim = *ranks.iter().max().unwrap();
    let killed_at = Instant::now();
    assert_eq!(unsafe { libc::kill(victim as i32, libc::SIGKILL) }, 0);
    let out = child.wait_with_output().unwrap();
    let waited = killed_at.elapsed();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(waited < Duration::from_secs(60), "took {waited:?}");
    assert!(
        text.contains("rank") && text.contains("signal 9"),
        "the message names neither the rank nor the signal: {text}"
    );
    let before = last_checkpoint(&killed).0;
    assert!(before < total);

    let text = ok(&train(&config, &killed, Some(2), &["--resume"]));
    assert!(text.contains("resumed at step"), "{text}");
    let a = checkpoint_params(&clean_last);
    let b = checkpoint_params(&last_checkpoint(&killed).1);
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs after a 2-rank resume");
    }

    // A preemption notice (SIGTERM to the launcher, as Slurm or Kubernetes send it): the ranks
    // finish their step, agree, write a checkpoint where they are and exit with status 3; the
    // same command, with no --resume, continues bit-identically (run.auto_resume).
    let preempted = root.join("preempted");
    let mut child = spawn_two_ranks(&config, &preempted);
    let seen = wait_for_checkpoint_inside(&mut child, &preempted, total);
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("received: stopped after step"), "{text}");
    let (stopped, _) = last_checkpoint(&preempted);
    assert!(
        stopped > seen && stopped < total,
        "{seen} {stopped} {total}"
    );
    let summary = metrics(&preempted)
        .into_iter()
        .rfind(|v| v["type"] == "summary")
        .unwrap();
    assert!(summary["preempted"].is_string(), "{summary}");
    let text = ok(&train(&config, &preempted, Some(2), &[]));
    assert!(
        text.contains(&format!("resumed at step {stopped}")),
        "{text}"
    );
    let b = checkpoint_params(&last_checkpoint(&preempted).1);
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(
            ta.equal(tb),
            "{na} differs after a preempted 2-rank run resumed"
        );
    }
}

#[test]
fn another_world_size_resumes_at_an_epoch_end_and_refuses_mid_epoch() {
    let (root, config) = setup("dist_world_change");
    let cfg_text = std::fs::read_to_string(&config).unwrap();

    // Two ranks write epoch-end checkpoints; keep only an early one and go on with one process.
    let run = root.join("run");
    ok(&train(&config, &run, Some(2), &[]));
    let all = multigrid::train::checkpoint::list(&run.join("checkpoints")).unwrap();
    let (keep_step, _) = all[1];
    for (s, dir) in &all {
        if *s != keep_step {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }
    let text = ok(&train(&config, &run, None, &["--resume"]));
    let kept = multigrid::train::checkpoint::read_manifest(
        &run.join("checkpoints")
            .join(multigrid::train::checkpoint::dir_name(keep_step)),
    )
    .unwrap();
    // One process's plan has its own step numbers: it resumes at the next epoch's first step.
    let schedule =
        multigrid::Schedule::new(multigrid::Config::from_json(&cfg_text).unwrap()).unwrap();
    let plan = multigrid::Plan::new(&schedule, 80, 1, 0, 0).unwrap();
    let two = multigrid::Plan::new(&schedule, 80, 2, 0, 0).unwrap();
    let epoch = (0..schedule.max_epoch())
        .find(|&e| two.epoch_first_step(e) == Some(keep_step))
        .unwrap();
    assert_eq!(kept.world_size, 2);
    let expect = plan.epoch_first_step(epoch).unwrap();
    assert!(
        text.contains(&format!("resumed at step {expect}")),
        "expected step {expect}: {text}"
    );

    // A mid-epoch checkpoint of one process cannot be resumed by two ranks.
    let mid = root.join("mid");
    let inside = (1..plan.total_steps())
        .find(|&s| (0..=schedule.max_epoch()).all(|e| plan.epoch_first_step(e) != Some(s)))
        .unwrap();
    {
        let c = multigrid::Config::from_json(&cfg_text).unwrap();
        let mut t = multigrid::train::Trainer::new(c, &mid).unwrap();
        // Cancelling saves a checkpoint at the step reached.
        t.fit(&mut |p| p.step + 1 == inside).unwrap();
        assert_eq!(t.next_step(), inside);
    }
    let out = train(&config, &mid, Some(2), &["--resume"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("mid-epoch") && text.contains("1 ranks") && text.contains("has 2"),
        "{text}"
    );
}

#[test]
fn a_cpu_run_under_torchrun_says_it_needs_mpi() {
    let (root, config) = setup("dist_torchrun_cpu");
    let out = bin()
        .arg("train")
        .arg("--config")
        .arg(&config)
        .arg("--output-dir")
        .arg(root.join("out"))
        .env("RANK", "0")
        .env("WORLD_SIZE", "2")
        .env("LOCAL_RANK", "0")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("mpirun") && text.contains("torchrun cannot"),
        "{text}"
    );
}

#[test]
fn a_hung_rank_makes_the_other_exit_within_the_timeout() {
    let (root, config) = setup("dist_hang");
    let out_dir = root.join("out");
    let mut child = bin()
        .arg("train")
        .arg("--config")
        .arg(&config)
        .arg("--output-dir")
        .arg(&out_dir)
        .args(["--nproc-per-node", "2", "--set", "run.dist_timeout_s=5"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while multigrid::train::checkpoint::list(&out_dir.join("checkpoints"))
        .unwrap()
        .is_empty()
    {
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint");
        assert!(child.try_wait().unwrap().is_none(), "ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ranks = rank_pids(child.id());
    assert_eq!(ranks.len(), 2, "rank processes: {ranks:?}");
    // SIGSTOP: the rank is alive but never answers, as a hung process would.
    let hung = *ranks.iter().max().unwrap();
    assert_eq!(unsafe { libc::kill(hung as i32, libc::SIGSTOP) }, 0);
    let stopped_at = Instant::now();
    let out = child.wait_with_output().unwrap();
    let waited = stopped_at.elapsed();
    // Whatever mpirun left behind must not outlive the test.
    unsafe {
        libc::kill(hung as i32, libc::SIGKILL);
        libc::kill(hung as i32, libc::SIGCONT);
    }
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("of 2:") && text.contains("did not complete within"),
        "{text}"
    );
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(60),
        "took {waited:?}"
    );
}

#[test]
fn sync_bn_over_two_ranks_equals_one_process_with_plain_bn() {
    sync_bn_over_two_ranks_equals_one_process("dist_sync_bn", &[]);
}

/// The same for a single-pathway network: an I3D with a non-local block after res3 block 1,
/// whose BN (the non-local block's too) syncs over the ranks as SlowFast's does. At a tenth of
/// the LR: at 0.002 this network drifts apart by 1.7e-4 (norm) without non-local blocks and
/// 6e-6 with, as do Slow's 2.9e-4, where at 0.0002 they agree to 2.1e-9 (measured): rounding
/// amplified by training (as the two-rank test above explains), not the sync.
#[test]
fn sync_bn_of_an_i3d_nl_over_two_ranks_equals_one_process() {
    sync_bn_over_two_ranks_equals_one_process(
        "dist_sync_bn_i3d",
        &[
            "--set",
            "model.arch=i3d",
            "--set",
            "model.nonlocal_location=[[[]],[[1]],[[]],[[]]]",
            "--set",
            "solver.base_lr=0.0002",
        ],
    );
}

/// Two MPI ranks of 2 clips against one process of 4, `extra` --set arguments on both: the
/// later stages sync BN over the ranks, and the trained parameters agree.
fn sync_bn_over_two_ranks_equals_one_process(name: &str, extra: &[&str]) {
    let (root, config) = setup(name);
    let one = root.join("one");
    let two = root.join("two");
    // Global batch 4: 2 clips per rank, below bn_base_size 4, so the later stages pool BN over
    // both ranks (sync BN), where one process normalises its 4 clips together.
    let mut set = vec![
        "--set",
        "solver.base_lr=0.002",
        "--set",
        "train.batch_size=4",
    ];
    set.extend_from_slice(extra);
    ok(&train(&config, &one, None, &set));
    let text = ok(&train_mpirun(&config, &two, 2, &set));
    assert!(text.contains("2 ranks (mpi)"), "{text}");
    assert_eq!(
        metrics(&two)
            .iter()
            .filter(|v| v["type"] == "summary")
            .count(),
        1,
        "one metrics file, written by rank 0 alone"
    );
    let synced = metrics(&two)
        .iter()
        .filter(|v| v["type"] == "train" && v["bn_sync_ranks"] == 2)
        .count();
    assert!(synced >= 10, "{synced} steps with sync BN");
    let (_, c1) = last_checkpoint(&one);
    let (_, c2) = last_checkpoint(&two);
    // Measured 1.3e-8 (norm) here; without the all-reduce in sync BN's backward pass, 1.2e-3.
    let (norm, element) = relative_difference(&checkpoint_params(&c1), &checkpoint_params(&c2));
    eprintln!("{name}: relative difference {norm:e} (norm), {element:e} (largest element)");
    assert!(
        norm < 1e-5 && element < 1e-5,
        "relative difference {norm:e}, {element:e}"
    );
    // BN statistics are not compared here: precise BN averages per-batch variances (as
    // fvcore), and a rank's batch of 2 has another variance than the process's batch of 4.
    // Where the rank's batch is the process's BN group they are (the test above).
}

/// The four-rank sync-BN test's batch at its `k`-th step, over all ranks: 8 clips of 8 frames
/// at 32 px (the slow pathway's 4 frames apart), 12 classes.
fn global_batch(k: u64) -> (tch::Tensor, tch::Tensor, tch::Tensor) {
    tch::manual_seed(1000 + k as i64);
    let opts = (tch::Kind::Float, tch::Device::Cpu);
    let fast = tch::Tensor::randn([8, 3, 8, 32, 32], opts);
    let slow = tch::Tensor::randn([8, 3, 4, 32, 32], opts);
    let labels = tch::Tensor::randint(12, [8], (tch::Kind::Int64, tch::Device::Cpu));
    (slow, fast, labels)
}

const GROUP_STEPS: u64 = 3;
const GROUP_LR: f64 = 0.01;

/// One rank of `four_ranks_with_sync_bn_groups_of_two_equal_one_process_with_those_groups`,
/// started by mpirun from that test (hence ignored by a plain `cargo test`). It records the
/// parameters it holds after start-up and its sync-BN groups, trains on its two clips of each
/// global batch (clips 2r and 2r + 1), and ends with a checkpoint.
#[test]
#[ignore = "a rank of four_ranks_with_sync_bn_groups_of_two_..., which mpirun starts"]
fn sync_bn_group_rank() {
    let root = PathBuf::from(std::env::var("MG_SYNC_BN_ROOT").expect("started by mpirun"));
    let config = multigrid::Config::from_file(root.join("config.json")).unwrap();
    let mut t = multigrid::train::Trainer::new(config, &root.join("ranks")).unwrap();
    let rank = t.rank();
    assert_eq!(t.world_size(), 4);
    let mut vars: Vec<(String, tch::Tensor)> = t.var_store().variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    tch::Tensor::write_safetensors(&vars, root.join(format!("init_{rank}.safetensors"))).unwrap();
    std::fs::write(
        root.join(format!("groups_{rank}.json")),
        serde_json::to_string(t.sync_bn_groups()).unwrap(),
    )
    .unwrap();
    let first = (0..t.plan().total_steps())
        .find(|&s| t.plan().step(s).unwrap().bn_sync_ranks == 2)
        .expect("no step with sync BN over 2 ranks");
    let mine = tch::Tensor::from_slice(&[2 * rank as i64, 2 * rank as i64 + 1]);
    for k in 0..GROUP_STEPS {
        let (slow, fast, labels) = global_batch(k);
        let pick = |x: &tch::Tensor| x.index_select(0, &mine);
        t.train_step(
            &pick(&slow),
            &pick(&fast),
            &pick(&labels),
            1,
            GROUP_LR,
            first + k,
        )
        .unwrap();
    }
    t.save_checkpoint().unwrap();
}

/// 4 MPI ranks whose per-rank batch (2) is below bn_base_size (4): sync BN pools ranks {0, 1}
/// and {2, 3}, sub-communicators of the world, made at start. One process with 2 BN groups
/// over the same 8 clips, ordered so its groups hold the same clips, must train the same
/// weights. Each rank draws its own initial weights, so equal starting points also prove the
/// broadcast of rank 0's.
#[test]
fn four_ranks_with_sync_bn_groups_of_two_equal_one_process_with_those_groups() {
    let (root, config_path) = setup("dist_sync_bn_groups");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["multigrid"]["short_cycle"] = false.into();
    config["run"]["auto_resume"] = false.into();
    std::fs::write(root.join("config.json"), config.to_string()).unwrap();
    let out = Command::new("mpirun")
        .args(["-np", "4", "--oversubscribe", "--bind-to", "none"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMP_NUM_THREADS", "1")
        .env("MG_SYNC_BN_ROOT", &root)
        .arg(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "sync_bn_group_rank",
            "--test-threads=1",
            "--nocapture",
        ])
        .output()
        .unwrap();
    let text = ok(&out);
    assert!(text.contains("1 passed"), "{text}");

    // Groups of consecutive ranks, made before the first step.
    for rank in 0..4 {
        let groups: Vec<Vec<usize>> = serde_json::from_str(
            &std::fs::read_to_string(root.join(format!("groups_{rank}.json"))).unwrap(),
        )
        .unwrap();
        let first = rank / 2 * 2;
        assert_eq!(groups, vec![vec![first, first + 1]], "rank {rank}");
    }

    // The reference, in this process: rank 0's seed, the whole batch, 2 BN groups (clips
    // 0, 2, 4, 6 and 1, 3, 5, 7), the clips ordered so that group 0 holds ranks 0-1's.
    let c = multigrid::Config::from_file(root.join("config.json")).unwrap();
    let mut one = multigrid::train::Trainer::new(c, &root.join("one")).unwrap();
    let mut init: Vec<(String, tch::Tensor)> = one.var_store().variables().into_iter().collect();
    init.sort_by(|a, b| a.0.cmp(&b.0));
    for rank in 0..4 {
        let theirs =
            tch::Tensor::read_safetensors(root.join(format!("init_{rank}.safetensors"))).unwrap();
        let mut theirs = theirs;
        theirs.sort_by(|a, b| a.0.cmp(&b.0));
        for ((n, a), (_, b)) in init.iter().zip(&theirs) {
            assert!(
                a.equal(b),
                "rank {rank} starts with another {n} than rank 0"
            );
        }
    }
    let order = tch::Tensor::from_slice(&[0i64, 4, 1, 5, 2, 6, 3, 7]);
    for k in 0..GROUP_STEPS {
        let (slow, fast, labels) = global_batch(k);
        let pick = |x: &tch::Tensor| x.index_select(0, &order);
        one.train_step(&pick(&slow), &pick(&fast), &pick(&labels), 2, GROUP_LR, k)
            .unwrap();
    }
    let mut trained: Vec<(String, tch::Tensor)> = one.var_store().variables().into_iter().collect();
    trained.sort_by(|a, b| a.0.cmp(&b.0));
    let (norm, element) = relative_difference(
        &trained,
        &checkpoint_params(&last_checkpoint(&root.join("ranks")).1),
    );
    assert!(
        norm < 1e-5 && element < 1e-5,
        "relative difference {norm:e}, {element:e}"
    );
    // And the groups matter: the same clips in groups 0-2 / 1-3 (the world's other pairing)
    // train other weights.
    let mut other = multigrid::train::Trainer::new(
        multigrid::Config::from_file(root.join("config.json")).unwrap(),
        &root.join("other"),
    )
    .unwrap();
    let pairing = tch::Tensor::from_slice(&[0i64, 2, 1, 3, 4, 6, 5, 7]);
    for k in 0..GROUP_STEPS {
        let (slow, fast, labels) = global_batch(k);
        let pick = |x: &tch::Tensor| x.index_select(0, &pairing);
        other
            .train_step(&pick(&slow), &pick(&fast), &pick(&labels), 2, GROUP_LR, k)
            .unwrap();
    }
    let mut wrong: Vec<(String, tch::Tensor)> = other.var_store().variables().into_iter().collect();
    wrong.sort_by(|a, b| a.0.cmp(&b.0));
    let (norm, _) = relative_difference(&trained, &wrong);
    assert!(
        norm > 1e-4,
        "the pairing changes nothing ({norm:e}): the test cannot tell"
    );
}

/// `multigrid eval` under a launcher, where one rank's data directory lacks the split: every
/// rank ends at once, that rank with its reason and the others saying another rank could not
/// open it, instead of meeting in mismatched collectives.
#[test]
fn eval_where_a_rank_cannot_open_the_split_ends_every_rank() {
    let (root, config) = setup("dist_eval_split");
    let run = root.join("run");
    ok(&train(
        &config,
        &run,
        None,
        &["--set", "solver.max_epoch=5"],
    ));
    let (_, checkpoint) = last_checkpoint(&run);
    // Rank 1's copy of the data: the same train split, no val split.
    let partial = root.join("partial");
    std::fs::create_dir_all(&partial).unwrap();
    std::os::unix::fs::symlink(
        root.join("data/train.mgstore"),
        partial.join("train.mgstore"),
    )
    .unwrap();
    let rank = |data: &Path| -> Vec<String> {
        let mut args = vec![
            "-np".to_string(),
            "1".into(),
            "-x".into(),
            "OMP_NUM_THREADS=1".into(),
        ];
        args.push(env!("CARGO_BIN_EXE_multigrid").into());
        args.extend(["eval", "--split", "val", "--config"].map(String::from));
        args.push(config.to_string_lossy().into_owned());
        args.push("--checkpoint".into());
        args.push(checkpoint.to_string_lossy().into_owned());
        args.push("--data".into());
        args.push(data.to_string_lossy().into_owned());
        args
    };
    let mut args = vec!["--bind-to".to_string(), "none".into()];
    args.extend(rank(&root.join("data")));
    args.push(":".into());
    args.extend(rank(&partial));
    let started = Instant::now();
    let out = Command::new("mpirun")
        .args(&args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .unwrap();
    let text = failed(&out);
    assert!(text.contains("rank 1 of 2:"), "{text}");
    assert!(
        text.contains("another rank cannot open the val split"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}
