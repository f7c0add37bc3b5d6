//! `multigrid gen-data`: the synthetic action dataset in Kinetics' layout (MP4 videos and
//! video lists, and/or clip stores) or in Charades' or SSv2's (JPEG frames and frame lists),
//! written by the library's generators.

use std::path::Path;
use std::time::Instant;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use multigrid::data::frame_list_gen::{self, FrameListOptions};
use multigrid::data::synthetic_kinetics::{self, KineticsOptions, KineticsSummary};
use multigrid::data::Task;

/// The on-disk layout `gen-data` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GenDataset {
    /// MP4 videos with PySlowFast's video lists, and/or clip stores.
    Kinetics,
    /// JPEG frames with multi-label frame lists.
    Charades,
    /// JPEG frames with frame lists and SSv2's JSON files.
    Ssv2,
}

/// `--task`: the library's tasks by name, each with its description in the help.
pub fn task_parser() -> impl TypedValueParser<Value = Task> {
    let values = Task::ALL.map(|t| PossibleValue::new(t.name()).help(t.about()));
    PossibleValuesParser::new(values).try_map(|name| name.parse::<Task>())
}

pub fn run(a: &crate::GenDataArgs) -> Result<(), String> {
    let start = Instant::now();
    let frame_lists = FrameListOptions {
        videos: a.clips,
        frames: a.frames,
        size: a.size,
        seed: a.seed,
        val_fraction: a.val_fraction,
    };
    let name = match a.dataset {
        GenDataset::Kinetics => {
            let o = KineticsOptions {
                clips: a.clips,
                frames: a.frames,
                size: a.size,
                seed: a.seed,
                val_fraction: a.val_fraction,
                store: a.store,
                videos: !a.no_videos,
                fps: a.fps.unwrap_or(30),
                task: a.task.unwrap_or(Task::Simple),
            };
            let s = synthetic_kinetics::write_kinetics(&a.out, &o).map_err(|e| e.to_string())?;
            print_kinetics(&a.out, &o, &s, start);
            return Ok(());
        }
        GenDataset::Charades => "charades",
        GenDataset::Ssv2 => "ssv2",
    };
    let kinetics_only = [
        ("--store", a.store),
        ("--no-videos", a.no_videos),
        ("--fps", a.fps.is_some()),
        ("--task", a.task.is_some()),
    ];
    if let Some((flag, _)) = kinetics_only.iter().find(|(_, given)| *given) {
        return Err(format!(
            "{flag} applies to --dataset kinetics only, not {name}"
        ));
    }
    let summary = match a.dataset {
        GenDataset::Charades => frame_list_gen::write_charades(&a.out, &frame_lists),
        _ => frame_list_gen::write_ssv2(&a.out, &frame_lists),
    }
    .map_err(|e| e.to_string())?;
    println!(
        "wrote {name}: {} train + {} val videos, {} frames of about {} at {}x{} ({} classes) to {} in {:.1} s",
        summary.train_videos,
        summary.val_videos,
        summary.frames,
        a.frames,
        a.size,
        a.size,
        summary.classes,
        a.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The clip stores `demo` and the benchmarks train on: generated into `dir` unless it holds
/// them already (`synthetic_kinetics::ensure_stores`).
#[cfg(feature = "torch")]
pub fn ensure_stores(dir: &Path, clips: u64, task: Task) -> Result<(), String> {
    let start = Instant::now();
    let written = synthetic_kinetics::ensure_stores(dir, clips, task).map_err(|e| e.to_string())?;
    if let Some(s) = written {
        let o = synthetic_kinetics::ensure_options(clips, task);
        print_kinetics(dir, &o, &s, start);
    }
    Ok(())
}

fn print_kinetics(out: &Path, o: &KineticsOptions, s: &KineticsSummary, start: Instant) {
    println!(
        "wrote {} clips of {} frames at {}x{} ({} classes) to {} in {:.1} s",
        o.clips,
        o.frames,
        o.size,
        o.size,
        s.classes,
        out.display(),
        start.elapsed().as_secs_f64()
    );
}
