//! The README's commands as a user runs them: each shell block between
//! `<!-- readme-test:NAME ... -->` and `<!-- /readme-test:NAME -->` runs with
//! `bash -euo pipefail` from the checkout in a clean environment (PATH and HOME, as in a plain
//! shell; not scripts/env.sh, not the variables cargo gives tests: LIBTORCH, LD_LIBRARY_PATH).
#![cfg(feature = "torch")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::repo;

/// The shell block between the markers of `name`.
fn readme_block(name: &str) -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let open = format!("<!-- readme-test:{name}");
    let close = format!("<!-- /readme-test:{name} -->");
    let start = readme
        .find(&open)
        .unwrap_or_else(|| panic!("README.md has no {open} marker"));
    let len = readme[start..]
        .find(&close)
        .unwrap_or_else(|| panic!("README.md has no {close} after {open}"));
    let marked = &readme[start..start + len];
    let body = marked
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .unwrap_or_else(|| panic!("no ```sh block between the {name} markers"))
        .0;
    body.to_string()
}

/// Variables that a user's shell has and that select the toolchain or the compilers; passed
/// on when set, so the block's `cargo build` meets the build of this test instead of
/// rebuilding it. LIBTORCH is passed only when it is the user's own (not the value
/// .cargo/config.toml gives every cargo command, which the block's cargo finds by itself).
const TOOLCHAIN_VARS: &[&str] = &[
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "CARGO_HOME",
    "RUSTFLAGS",
    "CC",
    "CXX",
    "CFLAGS",
    "CXXFLAGS",
    "PKG_CONFIG_PATH",
    "CUDA_HOME",
    "MG_CUDA_INCLUDE",
    "NCCL_INCLUDE_DIR",
    "TMPDIR",
];

fn plain_shell(script: &str) -> Command {
    let mut cmd = Command::new("bash");
    cmd.args(["--noprofile", "--norc", "-euo", "pipefail", "-c", script])
        .current_dir(repo())
        .env_clear();
    for var in ["PATH", "HOME"].iter().chain(TOOLCHAIN_VARS) {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    if let Some(own) = std::env::var_os("LIBTORCH") {
        let config = repo().join(".venv/libtorch");
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => a == b,
        };
        if !same(Path::new(&own), &config) {
            cmd.env("LIBTORCH", own);
        }
    }
    cmd
}

/// `make setup`, `cargo build --release`, the SONAME link, `cc` against include/multigrid.h
/// and the library, and the program run: exactly the README's "Build and link". A debug test
/// build runs it against target/debug (`--release` dropped, `target/release` read as
/// `target/debug`): the library `make test` has built, not a release build of everything
/// (minutes); `cargo test --release` runs the block unchanged. A build elsewhere
/// (CARGO_TARGET_DIR) runs it there: the block's `target/release` read as this build's
/// directory, and its `cargo build` given CARGO_TARGET_DIR, so that it meets this build
/// instead of building another in target/ that the test would not be checking.
#[test]
fn readme_build_and_link_works_in_a_plain_shell() {
    let block = readme_block("build-and-link");
    let dir = common::target_dir();
    let profile = dir.file_name().unwrap().to_str().unwrap().to_string();
    let root = dir.parent().unwrap();
    let moved = dir != repo().join("target").join(&profile);
    let mut needed = vec!["target/release"];
    if profile != "release" {
        needed.push("cargo build --release\n");
    }
    for needed in needed {
        assert!(
            block.contains(needed),
            "the block has no {needed:?}:\n{block}"
        );
    }
    let mut script = block.replace(
        "cargo build --release\n",
        &format!("{}\n", cargo_build(&profile)),
    );
    script = if moved {
        let at = shell_quoted(&dir);
        script
            .replace("$PWD/target/release", &at)
            .replace("target/release", &at)
    } else {
        script.replace("target/release", &format!("target/{profile}"))
    };
    // The block must make the SONAME link itself: remove the one other builds left (the
    // Makefile's, the C tests'), so a README without the `ln` fails here.
    let major = env!("CARGO_PKG_VERSION_MAJOR");
    let link = dir.join(format!("libmultigrid.so.{major}"));
    let _ = std::fs::remove_file(&link);
    let program = repo().join("schedule");
    let _ = std::fs::remove_file(&program);

    let started = std::time::Instant::now();
    let mut shell = plain_shell(&script);
    if moved {
        shell.env("CARGO_TARGET_DIR", root);
    }
    let out = shell.output().unwrap();
    let _ = std::fs::remove_file(&program);
    if std::fs::symlink_metadata(&link).is_err() {
        // Leave target/ as the other tests expect it, whatever the block did.
        let _ = std::os::unix::fs::symlink("libmultigrid.so", &link);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the README's build-and-link block failed ({}) in a plain shell:\n{script}\n\
         stdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for expected in [
        "13 stages, 358 epochs",
        "total steps (rank 0 of 8, 240000 clips): 261582",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert_eq!(
        std::fs::read_link(&link).ok(),
        Some(PathBuf::from("libmultigrid.so")),
        "the block's link"
    );
    eprintln!(
        "build-and-link block against {}: {:.1?}",
        dir.display(),
        started.elapsed()
    );
}

/// The block's `cargo build --release` for a build of `profile`.
fn cargo_build(profile: &str) -> String {
    match profile {
        "release" => "cargo build --release".into(),
        "debug" => "cargo build".into(),
        other => format!("cargo build --profile {other}"),
    }
}

/// `path` as one bash word.
fn shell_quoted(path: &Path) -> String {
    let s = path.to_str().expect("a UTF-8 target directory");
    assert!(
        !s.contains('\''),
        "{s}: a target directory with a ' in its name"
    );
    format!("'{s}'")
}
