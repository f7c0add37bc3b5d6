//! `multigrid bench loader`: the loader's clips/s from each source of one split (video list,
//! clip store, frame store), over a plan's first steps or one core's rate per shape.

use std::path::Path;
use std::time::Instant;

use multigrid::collate;
use multigrid::data::Dataset;

use crate::LoaderArgs;
/// The sources of one split that `data` holds: its video list, clip store and frame store.
fn loader_sources(data: &Path, split: &str) -> Result<Vec<(&'static str, Dataset)>, String> {
    let mut sources = Vec::new();
    if data.join(format!("{split}.csv")).exists() {
        sources.push((
            "mp4 (decode)",
            Dataset::video_list(data, split).map_err(|e| e.to_string())?,
        ));
    }
    for (name, ext) in [("clip store", "mgstore"), ("jpeg frames", "mgframes")] {
        let store = data.join(format!("{split}.{ext}"));
        if store.exists() {
            sources.push((name, Dataset::store(&store).map_err(|e| e.to_string())?));
        }
    }
    if sources.is_empty() {
        return Err(format!(
            "{} has none of {split}.csv, {split}.mgstore, {split}.mgframes",
            data.display()
        ));
    }
    Ok(sources)
}

/// Clips/s of the loader over the first `steps` steps of a plan from each source of the same
/// split; with `per_shape`, one core's clips/s at each of the plan's shapes instead.
pub fn run(o: &LoaderArgs) -> Result<(), String> {
    use multigrid::data::{Loader, LoaderOptions};
    use std::sync::Arc;
    let mut config = multigrid::Config::from_file(&o.config).map_err(|e| e.to_string())?;
    config
        .apply_overrides(&o.set)
        .map_err(|e| format!("{} with --set: {e}", o.config.display()))?;
    let schedule = multigrid::Schedule::new(config).map_err(|e| e.to_string())?;
    let sources = loader_sources(&o.data, &o.split)?;
    if o.per_shape {
        return per_shape_bench(&schedule, sources, o.clips_per_shape, o.gpu_step_s);
    }
    println!(
        "loader: {} workers, first {} steps of {}",
        o.workers,
        o.steps,
        o.config.display()
    );
    println!(
        "{:>14} {:>10} {:>10} {:>12} {:>14} {:>10}",
        "source", "clips", "seconds", "clips/s", "first batch s", "failures"
    );
    for (name, dataset) in sources {
        let plan = Arc::new(
            multigrid::Plan::new(&schedule, dataset.len() as u64, 1, 0, 0)
                .map_err(|e| e.to_string())?,
        );
        let steps = o.steps.min(plan.total_steps());
        let options = LoaderOptions {
            workers: o.workers,
            queue_clips: schedule.config().run.queue_clips,
            ..LoaderOptions::default()
        };
        let start = Instant::now();
        let mut loader =
            Loader::new(plan, Arc::new(dataset), 0..steps, options).map_err(|e| e.to_string())?;
        let mut clips = 0;
        let mut first = None;
        while let Some(b) = loader.next_batch() {
            clips += b.map_err(|e| e.to_string())?.len();
            first.get_or_insert(start.elapsed().as_secs_f64());
        }
        let secs = start.elapsed().as_secs_f64();
        let stats = loader.stats();
        println!(
            "{name:>14} {clips:>10} {secs:>10.2} {:>12.1} {:>14.2} {:>10}",
            clips as f64 / secs,
            first.unwrap_or(0.0),
            stats.failures
        );
    }
    Ok(())
}

/// Bytes on disk and hours of video of a source (frame rates as recorded; 30 fps where a store
/// recorded none).
fn bytes_and_hours(d: &Dataset) -> Result<(u64, f64), String> {
    let size = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len())
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let seconds = |frames: u32, fps: Option<f64>| f64::from(frames) / fps.unwrap_or(30.0);
    match d {
        Dataset::Store(s) => {
            let mut secs = 0.0;
            for i in 0..s.len() {
                let c = s.info(i).map_err(|e| e.to_string())?;
                secs += seconds(c.num_frames, c.fps());
            }
            Ok((size(s.path())?, secs / 3600.0))
        }
        Dataset::Frames(s) => {
            let mut secs = 0.0;
            for i in 0..s.len() {
                let c = s.info(i).map_err(|e| e.to_string())?;
                secs += seconds(c.num_frames, c.fps());
            }
            Ok((size(s.path())?, secs / 3600.0))
        }
        Dataset::VideoList { entries, .. } => {
            let (mut bytes, mut secs) = (0, 0.0);
            for (path, _) in entries {
                bytes += size(path)?;
                secs += video_seconds(path)?;
            }
            Ok((bytes, secs / 3600.0))
        }
        Dataset::FrameLists(_) => Err("frame lists are not timed here".into()),
    }
}

#[cfg(feature = "video")]
fn video_seconds(path: &Path) -> Result<f64, String> {
    let info = multigrid::data::video::probe(path).map_err(|e| e.to_string())?;
    Ok(f64::from(info.num_frames) / info.fps)
}

#[cfg(not(feature = "video"))]
fn video_seconds(path: &Path) -> Result<f64, String> {
    Err(format!(
        "{}: this build has no video decoding",
        path.display()
    ))
}

/// One core's clips/s at every distinct (batch, frames, crop) of the plan, for each source: the
/// first `clips` clips of the first step of each shape, collated on this thread with one
/// collation thread. Then the cores one GPU needs per source at `gpu_step_s` per step.
fn per_shape_bench(
    schedule: &multigrid::Schedule,
    sources: Vec<(&'static str, Dataset)>,
    clips: usize,
    gpu_step_s: f64,
) -> Result<(), String> {
    use multigrid::data::dataset::{batch_spec, load_clips};
    collate::set_num_threads(1).map_err(|e| e.to_string())?;
    let alpha = schedule.config().model.collate_alpha();
    println!("one core, {clips} clips per shape and source; a GPU step takes {gpu_step_s} s");
    println!(
        "{:>12} {:>16} {:>12} {:>12}",
        "source", "bytes/hour", "MB", "hours"
    );
    for (name, d) in &sources {
        match bytes_and_hours(d) {
            Ok((bytes, hours)) => println!(
                "{name:>12} {:>14.2}GB {:>12.1} {hours:>12.3}",
                bytes as f64 / hours / 1e9,
                bytes as f64 / 1e6
            ),
            Err(e) => println!("{name:>12} {e}"),
        }
    }
    let names: Vec<&str> = sources.iter().map(|s| s.0).collect();
    print!("{:>16}", "B x T x S");
    for n in &names {
        print!(" {:>14}", format!("{n} c/s"));
    }
    for n in &names {
        print!(
            " {:>12}",
            format!("{} cores", n.split(' ').next().unwrap_or(n))
        );
    }
    println!();
    let plan0 = multigrid::Plan::new(schedule, sources[0].1.len() as u64, 1, 0, 0)
        .map_err(|e| e.to_string())?;
    let mut seen = std::collections::BTreeSet::new();
    let mut firsts = Vec::new();
    for k in 0..plan0.total_steps() {
        let st = plan0.step(k).map_err(|e| e.to_string())?;
        let shape = (st.batch_size, st.num_frames, st.crop_size);
        if seen.insert((
            std::cmp::Reverse(st.batch_size),
            st.num_frames,
            st.crop_size,
        )) {
            firsts.push((shape, k));
        }
    }
    firsts.sort_by_key(|&((b, t, s), _)| (std::cmp::Reverse(b), t, s));
    for ((b, t, s), k) in firsts {
        let mut rates = Vec::new();
        for (name, d) in &sources {
            let plan = multigrid::Plan::new(schedule, d.len() as u64, 1, 0, 0)
                .map_err(|e| e.to_string())?;
            let step = plan.step(k).map_err(|e| e.to_string())?;
            let mut spec = batch_spec(d, &plan, &step, alpha).map_err(|e| e.to_string())?;
            // The step's own clips, repeated when the batch holds fewer than asked for.
            let base = spec.indices.clone();
            spec.indices = base.iter().copied().cycle().take(clips).collect();
            let mut fast = vec![0f32; clips * spec.clip_len];
            let start = Instant::now();
            let loaded =
                load_clips(d, &plan, &spec, 0..clips, &mut fast).map_err(|e| e.to_string())?;
            let secs = start.elapsed().as_secs_f64();
            std::hint::black_box(&fast);
            if !loaded.failures.is_empty() {
                // A replaced clip would time another clip's work.
                return Err(format!("{name}: {}", loaded.failures[0]));
            }
            rates.push(clips as f64 / secs);
        }
        print!("{:>16}", format!("{b} x {t} x {s}"));
        for r in &rates {
            print!(" {r:>14.1}");
        }
        // Clips one GPU consumes per second at this shape over one core's clips per second.
        let need = f64::from(b) / gpu_step_s;
        for r in &rates {
            print!(" {:>12.1}", need / r);
        }
        println!();
    }
    Ok(())
}
