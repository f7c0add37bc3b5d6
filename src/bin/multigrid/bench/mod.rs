//! `multigrid bench`: each benchmark in its own module; each reports a ratio against a
//! reference measured in the same run.

mod collate;
#[cfg(feature = "torch")]
mod dist;
mod loader;
#[cfg(feature = "torch")]
pub mod scale;
#[cfg(feature = "torch")]
mod sgd;
#[cfg(feature = "torch")]
mod speedup;
#[cfg(feature = "torch")]
mod step;

use std::time::{Duration, Instant};

use crate::BenchCommand;

pub fn run(b: &BenchCommand) -> Result<(), String> {
    match b {
        BenchCommand::Collate(a) => collate::run(a),
        #[cfg(feature = "torch")]
        BenchCommand::Step(a) => step::run(a),
        #[cfg(feature = "torch")]
        BenchCommand::Sgd(a) => sgd::run(a),
        #[cfg(feature = "torch")]
        BenchCommand::Speedup(a) => speedup::run(a),
        #[cfg(feature = "torch")]
        BenchCommand::Dist(a) => dist::run(a),
        BenchCommand::Loader(a) => loader::run(a),
        #[cfg(feature = "torch")]
        BenchCommand::Scale(a) => scale::run(a),
    }
}

/// Single-threaded memcpy bandwidth over a buffer well beyond the caches: bytes written per s.
pub fn memcpy_gbps(seconds: f64) -> f64 {
    let n = 64 << 20;
    let src = vec![1u8; n];
    let mut dst = vec![0u8; n];
    dst.copy_from_slice(&src);
    let start = Instant::now();
    let mut reps = 0;
    while reps < 3 || start.elapsed() < Duration::from_secs_f64(seconds / 2.0) {
        dst.copy_from_slice(&src);
        std::hint::black_box(&mut dst);
        reps += 1;
    }
    (reps * n) as f64 / start.elapsed().as_secs_f64() / 1e9
}

/// The device `--device` names (auto, cpu, cuda, cuda:N), as the trainer resolves it.
#[cfg(feature = "torch")]
fn device(text: &str) -> Result<tch::Device, String> {
    let choice = text.parse().map_err(|e| format!("--device {e}"))?;
    multigrid::train::parse_device(choice).map_err(|e| e.to_string())
}
/// A libtorch error as the CLI reports it: through the crate's conversion, so it reads as the
/// library's own errors do.
#[cfg(feature = "torch")]
fn torch_message(e: tch::TchError) -> String {
    multigrid::Error::from(e).to_string()
}
