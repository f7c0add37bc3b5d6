//! The synthetic action dataset in Kinetics' layout (`multigrid gen-data --dataset kinetics`):
//! MP4 videos under `videos/` with PySlowFast's video lists `{train,val,test}.csv`
//! (`path label` per line), and/or the clip stores `{train,val,test}.mgstore`; beside them
//! `classes.txt` (class names in label order) and `generator.txt` (what rendered them). The
//! clips come from one of two [`Task`]s: the simple one ([`super::synthetic`]) or the hard one
//! ([`super::synthetic_hard`]). Charades and SSv2 layouts of the same clips are in
//! [`super::frame_list_gen`].

use std::fmt;
use std::path::Path;

use rayon::prelude::*;

use super::frame_list_gen::write_atomic;
use super::{synthetic, synthetic_hard, Dataset, StoreWriter};
use crate::error::{Error, Result};

/// The synthetic action task the clips show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Task {
    /// 12 classes (8 directions, two rotations, approach, recede); saturates near 90% in a
    /// few epochs: the demo's.
    Simple,
    /// 24 classes (the simple task's 12 motions, each slow or fast): keeps improving over a
    /// longer schedule (the speedup benchmark's).
    Hard,
}

impl Task {
    pub const ALL: [Task; 2] = [Task::Simple, Task::Hard];

    /// The name `--task` takes.
    pub fn name(self) -> &'static str {
        match self {
            Task::Simple => "simple",
            Task::Hard => "hard",
        }
    }

    /// One line on what the task is, for help texts.
    pub fn about(self) -> &'static str {
        match self {
            Task::Simple => {
                "12 classes (8 directions, two rotations, approach, recede); saturates near 90% \
                 in a few epochs: the demo's"
            }
            Task::Hard => {
                "24 classes (the simple task's 12 motions, each slow or fast): keeps improving \
                 over a longer schedule (the speedup benchmark's)"
            }
        }
    }

    /// Names what the generator renders today, written to `generator.txt` beside the data, so
    /// a benchmark regenerates data that an older generator wrote under the same class names.
    pub fn generator(self) -> &'static str {
        match self {
            Task::Simple => "simple 1",
            Task::Hard => "hard 3: 12 motions, rates from the lowest and highest thirds",
        }
    }

    pub fn class_names(self) -> Vec<String> {
        match self {
            Task::Simple => synthetic::CLASSES.iter().map(|c| c.to_string()).collect(),
            Task::Hard => synthetic_hard::class_names(),
        }
    }

    pub fn label_of(self, i: u64) -> u32 {
        match self {
            Task::Simple => synthetic::label_of(i),
            Task::Hard => synthetic_hard::label_of(i),
        }
    }

    /// Clip `i` of `seed`: `frames` RGB frames of `size` x `size`.
    pub fn render(self, seed: u64, i: u64, frames: u32, size: u32) -> Vec<u8> {
        match self {
            Task::Simple => synthetic::render_clip(seed, i, frames, size),
            Task::Hard => synthetic_hard::render_clip(seed, i, frames, size),
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Task {
    type Err = Error;
    fn from_str(s: &str) -> Result<Task> {
        Task::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                Error::InvalidArgument(format!("task must be simple or hard, got {s:?}"))
            })
    }
}

/// What [`write_kinetics`] writes.
#[derive(Debug, Clone)]
pub struct KineticsOptions {
    pub clips: u64,
    pub frames: u32,
    /// Frame side in pixels (even, at least 16).
    pub size: u32,
    pub seed: u64,
    /// Share of the clips in val, and again in test.
    pub val_fraction: f64,
    /// Write the clip stores.
    pub store: bool,
    /// Write the MP4 files and their lists (needs the `video` feature).
    pub videos: bool,
    pub fps: u32,
    pub task: Task,
}

impl Default for KineticsOptions {
    fn default() -> Self {
        KineticsOptions {
            clips: 1000,
            frames: 64,
            size: 128,
            seed: 0,
            val_fraction: 0.1,
            store: false,
            videos: true,
            fps: 30,
            task: Task::Simple,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KineticsSummary {
    /// Clips in train, val and test.
    pub clips: [u64; 3],
    pub classes: usize,
}

const SPLITS: [&str; 3] = ["train", "val", "test"];

/// Split of clip `i` of a task of `classes` classes. Clip i has class c = i % classes in round
/// k = i / classes; with m = 1 / val_fraction it goes to val when (k + c) % m == m - 1 and to
/// test when it is m - 2. Every class reaches every split, and even a small dataset has a val
/// and a test clip in each round.
fn split_of(i: u64, val_fraction: f64, classes: u64) -> usize {
    let m = (1.0 / val_fraction.clamp(0.01, 0.5)).round() as u64;
    match (i / classes + i % classes) % m {
        r if r == m - 1 => 1,
        r if r == m - 2 => 2,
        _ => 0,
    }
}

fn check(o: &KineticsOptions) -> Result<()> {
    if !o.videos && !o.store {
        return Err(Error::InvalidArgument(
            "nothing to write: pass --store or leave videos on".into(),
        ));
    }
    if o.size % 2 != 0 || o.size < 16 || o.frames == 0 || o.clips == 0 {
        return Err(Error::InvalidArgument(
            "--size must be even and >= 16; --frames and --clips > 0".into(),
        ));
    }
    if !o.videos {
        return Ok(());
    }
    if cfg!(feature = "video") {
        Ok(())
    } else {
        Err(Error::Unsupported(
            "this build has no video encoding (the `video` feature is off); use --store --no-videos"
                .into(),
        ))
    }
}

/// Writes the dataset into `out`: clips rendered (and encoded) in parallel, stores appended
/// in clip order, lists and class names written last, each through a temporary file.
pub fn write_kinetics(out: &Path, o: &KineticsOptions) -> Result<KineticsSummary> {
    check(o)?;
    let videos = out.join("videos");
    std::fs::create_dir_all(&videos).map_err(|source| Error::Io {
        path: videos.clone(),
        source,
    })?;
    let classes = o.task.class_names();
    let mut writers: Vec<Option<StoreWriter>> = SPLITS
        .iter()
        .map(|s| {
            o.store
                .then(|| StoreWriter::create(out.join(format!("{s}.mgstore"))))
                .transpose()
        })
        .collect::<Result<_>>()?;
    let mut lists: Vec<String> = vec![String::new(); 3];
    let mut counts = [0u64; 3];
    let chunk = 64u64;
    for first in (0..o.clips).step_by(chunk as usize) {
        let ids: Vec<u64> = (first..(first + chunk).min(o.clips)).collect();
        let rendered: Vec<(u64, Vec<u8>)> = ids
            .par_iter()
            .map(|&i| {
                let frames = o.task.render(o.seed, i, o.frames, o.size);
                if o.videos {
                    write_video(&videos.join(format!("{i:06}.mp4")), &frames, o)?;
                }
                Ok((i, frames))
            })
            .collect::<Result<_>>()?;
        for (i, frames) in rendered {
            let split = split_of(i, o.val_fraction, classes.len() as u64);
            let label = o.task.label_of(i);
            counts[split] += 1;
            if o.videos {
                lists[split].push_str(&format!("videos/{i:06}.mp4 {label}\n"));
            }
            if let Some(w) = writers[split].as_mut() {
                let fps = Some(f64::from(o.fps));
                w.add_at_fps(&frames, o.frames, o.size, o.size, label, fps)?;
            }
        }
    }
    if o.videos {
        for (s, list) in SPLITS.iter().zip(&lists) {
            write_atomic(&out.join(format!("{s}.csv")), list.as_bytes(), true)?;
        }
    }
    for w in writers.into_iter().flatten() {
        w.finish()?;
    }
    // The class names, in label order: for people, and for the benchmark's chance level.
    let names: String = classes.iter().map(|c| format!("{c}\n")).collect();
    write_atomic(&out.join("classes.txt"), names.as_bytes(), true)?;
    let generator = format!("{}\n", o.task.generator());
    write_atomic(&out.join("generator.txt"), generator.as_bytes(), true)?;
    Ok(KineticsSummary {
        clips: counts,
        classes: classes.len(),
    })
}

/// The set `demo` and the benchmarks train on: `clips` clips of `task`, 32 frames at 64 x 64,
/// in clip stores (and MP4s for the simple task, when this build encodes video).
pub fn ensure_options(clips: u64, task: Task) -> KineticsOptions {
    KineticsOptions {
        clips,
        frames: 32,
        size: 64,
        store: true,
        // The demo and the benchmarks read the stores; MP4s only cost time there (a third of
        // the demo data's generation). `multigrid gen-data` writes them when asked.
        videos: false,
        task,
        ..KineticsOptions::default()
    }
}

/// Generates the set of [`ensure_options`] into `dir` unless its three stores already hold
/// `clips` clips of that task's classes from today's generator. An older, differently sized
/// or other task's set is replaced. Returns what was written, None when nothing needed to be.
pub fn ensure_stores(dir: &Path, clips: u64, task: Task) -> Result<Option<KineticsSummary>> {
    let held: Option<u64> = SPLITS
        .iter()
        .map(|split| {
            Dataset::store(dir.join(format!("{split}.mgstore")))
                .ok()
                .map(|d| d.len() as u64)
        })
        .sum();
    let names: String = task
        .class_names()
        .iter()
        .map(|c| format!("{c}\n"))
        .collect();
    let read = |name: &str| std::fs::read_to_string(dir.join(name));
    let same_task = read("classes.txt").is_ok_and(|t| t == names)
        && read("generator.txt").is_ok_and(|t| t.trim_end() == task.generator());
    if held == Some(clips) && same_task {
        return Ok(None);
    }
    write_kinetics(dir, &ensure_options(clips, task)).map(Some)
}

#[cfg(feature = "video")]
fn write_video(path: &Path, frames: &[u8], o: &KineticsOptions) -> Result<()> {
    super::video::encode_mp4(path, frames, o.frames, o.size, o.size, o.fps).map(drop)
}

#[cfg(not(feature = "video"))]
fn write_video(path: &Path, _: &[u8], _: &KineticsOptions) -> Result<()> {
    Err(Error::Unsupported(format!(
        "{}: this build has no video encoding (the `video` feature is off)",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_reaches_every_split() {
        for task in Task::ALL {
            let classes = task.class_names().len() as u64;
            let mut seen = vec![[false; 3]; classes as usize];
            for i in 0..classes * 10 {
                seen[task.label_of(i) as usize][split_of(i, 0.1, classes)] = true;
            }
            assert!(seen.iter().all(|s| s.iter().all(|&x| x)), "{task}");
        }
    }

    #[test]
    fn tasks_parse_by_name() {
        for t in Task::ALL {
            assert_eq!(t.name().parse::<Task>().unwrap(), t);
        }
        let e = "medium".parse::<Task>().unwrap_err().to_string();
        assert!(e.contains("simple or hard") && e.contains("medium"), "{e}");
    }

    #[test]
    fn stores_are_written_once_per_task() {
        let dir = std::env::temp_dir().join(format!("mg-kinetics-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let o = KineticsOptions {
            clips: 30,
            frames: 4,
            size: 16,
            store: true,
            videos: false,
            ..KineticsOptions::default()
        };
        let s = write_kinetics(&dir, &o).unwrap();
        assert_eq!(s.clips.iter().sum::<u64>(), 30);
        assert_eq!(s.classes, 12);
        let train = Dataset::store(dir.join("train.mgstore")).unwrap();
        assert_eq!(train.len() as u64, s.clips[0]);
        assert!(!dir.join("train.csv").exists());
        // Another task's set is replaced, the same one kept.
        let hard = ensure_stores(&dir, 30, Task::Hard).unwrap().unwrap();
        assert_eq!(hard.classes, 24);
        assert_eq!(ensure_stores(&dir, 30, Task::Hard).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
