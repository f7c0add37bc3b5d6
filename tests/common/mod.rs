//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use multigrid::{Config, Schedule};

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn config_path(name: &str) -> PathBuf {
    repo().join("configs").join(name)
}

pub fn schedule(name: &str) -> Schedule {
    Schedule::new(Config::from_file(config_path(name)).unwrap()).unwrap()
}

/// The tests' SlowFast: depth 18, width 8, 12 classes, no dropout.
pub fn tiny_model() -> multigrid::schedule::ModelConfig {
    multigrid::schedule::ModelConfig {
        depth: 18,
        width_per_group: 8,
        num_classes: 12,
        dropout_rate: 0.0,
        ..Default::default()
    }
}

pub fn kinetics() -> Schedule {
    schedule("kinetics_slowfast_8x8_r50_multigrid.json")
}

/// Kinetics config JSON with `patch` merged in (objects merge key by key).
pub fn kinetics_json_with(patch: serde_json::Value) -> String {
    let text =
        std::fs::read_to_string(config_path("kinetics_slowfast_8x8_r50_multigrid.json")).unwrap();
    let mut base: serde_json::Value = serde_json::from_str(&text).unwrap();
    merge(&mut base, patch);
    base.to_string()
}

/// Merges `patch` into `base`: objects key by key, anything else replaced.
pub fn merge(base: &mut serde_json::Value, patch: serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

/// The directory holding libmultigrid.so and the binaries of this test build, with the
/// `libmultigrid.so.MAJOR` link that programs linked against it ask for (its SONAME).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test>-<hash>
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let link = dir.join(format!(
        "libmultigrid.so.{}",
        env!("CARGO_PKG_VERSION_MAJOR")
    ));
    static LINK: std::sync::Once = std::sync::Once::new();
    LINK.call_once(|| {
        if dir.join("libmultigrid.so").exists() && !link.exists() {
            // Test binaries run in parallel too: make the link under a per-process name, then
            // rename it into place (atomic; the loser's rename just replaces an equal link).
            let tmp = dir.join(format!(".soname-link-{}", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink("libmultigrid.so", &tmp).unwrap();
            std::fs::rename(&tmp, &link).unwrap();
        }
    });
    dir
}

/// Writes a synthetic clip-store dataset (no videos) of `clips` clips, 16 frames at 40 px,
/// into `dir`, replacing whatever was there so a data layout change never meets a stale copy.
pub fn gen_store(dir: &Path, clips: u32) {
    let _ = std::fs::remove_dir_all(dir);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_multigrid"))
        .args([
            "gen-data",
            "--clips",
            &clips.to_string(),
            "--frames",
            "16",
            "--size",
            "40",
            "--store",
            "--no-videos",
            "--out",
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compiles a C or C++ program against include/ and this build's libmultigrid, warnings as
/// errors, with an rpath to the library.
pub fn compile_c(compiler: &str, args: &[&str], source: &Path, out: &Path) {
    let lib_dir = target_dir();
    assert!(
        lib_dir.join("libmultigrid.so").exists(),
        "{} has no libmultigrid.so: `cargo test` does not link it, run `cargo build` first (make test does)",
        lib_dir.display()
    );
    let status = Command::new(compiler)
        .args(args)
        .arg("-Wall")
        .arg("-Wextra")
        .arg("-Werror")
        .arg("-I")
        .arg(repo().join("include"))
        .arg(source)
        .arg("-o")
        .arg(out)
        .arg("-L")
        .arg(&lib_dir)
        .arg("-lmultigrid")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-lm")
        .status()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    assert!(
        status.success(),
        "{compiler} {args:?} failed on {}",
        source.display()
    );
}

/// Runs a compiled program from the repository root; asserts it succeeds and that no
/// sanitizer reported anything. Returns its stdout.
pub fn run_c(exe: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(exe)
        .args(args)
        .current_dir(repo())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} exited with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        exe.display(),
        out.status
    );
    assert!(!stderr.contains("ERROR: AddressSanitizer"), "{stderr}");
    assert!(!stderr.contains("ERROR: LeakSanitizer"), "{stderr}");
    assert!(!stderr.contains("runtime error"), "{stderr}");
    stdout
}

/// A fresh directory `name` under the tests' scratch directory (emptied if it exists).
pub fn scratch(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&root);
    root
}

/// Trains `c` to the end into `out` and returns its metrics lines.
#[cfg(feature = "torch")]
pub fn fit_log(c: Config, out: &Path) -> Vec<serde_json::Value> {
    let mut t = multigrid::train::Trainer::new(c, out).unwrap();
    let s = t.fit(&mut |_| false).unwrap();
    assert!(!s.cancelled);
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The metrics lines of one `type`.
pub fn of_type<'a>(log: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    log.iter().filter(|v| v["type"] == kind).collect()
}
