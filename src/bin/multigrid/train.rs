//! `multigrid train`, `eval`, `demo` and `plot`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use multigrid::collate::ViewMode;
use multigrid::train::{open_split, Summary, Trainer};
use multigrid::Config;

fn load_config(path: &Path, device: Option<&str>, data: Option<&Path>) -> Result<Config, String> {
    let mut c = Config::from_file(path).map_err(|e| e.to_string())?;
    if let Some(d) = device {
        c.run.device = d.to_string();
    }
    if let Some(d) = data {
        c.run.data_dir = d.to_string_lossy().into_owned();
    }
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

pub fn train(
    config: &Path,
    out: &Path,
    resume: bool,
    device: Option<&str>,
    data: Option<&Path>,
) -> Result<Summary, String> {
    let c = load_config(config, device, data)?;
    let mut t = Trainer::new(c, out).map_err(|e| e.to_string())?;
    if resume && t.resume().map_err(|e| e.to_string())? {
        eprintln!("multigrid: resumed at step {}", t.next_step());
    }
    let tty = std::io::stderr().is_terminal();
    let total = t.plan().total_steps();
    eprintln!(
        "multigrid: training {} steps on {:?}, writing {}",
        total - t.next_step(),
        t.device(),
        out.display()
    );
    let summary = t
        .fit(&mut |p| {
            if tty {
                let width = 30;
                let done = ((p.step + 1) * width / p.total_steps.max(1)) as usize;
                eprint!(
                    "\r[{}{}] {}/{} epoch {} loss {:.3} lr {:.2e}  ",
                    "#".repeat(done),
                    ".".repeat(width as usize - done),
                    p.step + 1,
                    p.total_steps,
                    p.epoch,
                    p.loss,
                    p.lr
                );
            }
            false
        })
        .map_err(|e| e.to_string())?;
    if tty {
        eprintln!();
    }
    let fmt = |a: Option<multigrid::train::Accuracy>| {
        a.map_or("-".into(), |a| format!("{:.1} / {:.1}", a.top1, a.top5))
    };
    println!(
        "wall {:.1} s, {} steps, {} clips; val top-1/top-5 {}; test {}",
        summary.wall_seconds,
        summary.steps,
        summary.clips_seen,
        fmt(summary.final_val),
        fmt(summary.test)
    );
    Ok(summary)
}

pub fn eval(
    config: &Path,
    checkpoint: &Path,
    split: &str,
    device: Option<&str>,
    data: Option<&Path>,
) -> Result<(), String> {
    let c = load_config(config, device, data)?;
    let tmp = std::env::temp_dir().join(format!("multigrid-eval-{}", std::process::id()));
    let mut t = Trainer::new(c.clone(), &tmp).map_err(|e| e.to_string())?;
    t.load_checkpoint(checkpoint).map_err(|e| e.to_string())?;
    let ds = open_split(Path::new(&c.run.data_dir), split).map_err(|e| e.to_string())?;
    let mode = if split == "test" {
        ViewMode::Test {
            temporal: 0,
            num_temporal: c.run.test_num_temporal_views,
            spatial: c.run.test_num_spatial_crops,
        }
    } else {
        ViewMode::Val
    };
    let a = t.evaluate(&ds, mode).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&tmp);
    println!(
        "{split}: top-1 {:.2} top-5 {:.2} over {} clips",
        a.top1, a.top5, a.clips
    );
    Ok(())
}

/// Loss and accuracy against wall-clock time for one or more runs, as an SVG chart.
pub fn plot(runs: &[PathBuf], out: &Path) -> Result<(), String> {
    let colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];
    let mut series = Vec::new();
    for run in runs {
        let text = std::fs::read_to_string(run.join("metrics.jsonl"))
            .map_err(|e| format!("{}: {e}", run.display()))?;
        let (mut acc, mut loss) = (Vec::new(), Vec::new());
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let wall = v["wall_s"].as_f64().unwrap_or(0.0);
            match v["type"].as_str() {
                Some("eval") => acc.push((wall, v["top1"].as_f64().unwrap_or(0.0))),
                Some("train") => loss.push((wall, v["loss"].as_f64().unwrap_or(0.0))),
                _ => {}
            }
        }
        let name = run
            .file_name()
            .map_or("run".into(), |n| n.to_string_lossy().into_owned());
        series.push((name, acc, loss));
    }
    let tmax = series
        .iter()
        .flat_map(|s| s.1.iter().chain(&s.2).map(|p| p.0))
        .fold(1.0f64, f64::max);
    let lmax = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .fold(0.1f64, f64::max);
    let (w, h, pad) = (440.0, 300.0, 50.0);
    let mut svg = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{}' height='{}' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n",
        2.0 * w + 3.0 * pad,
        h + 2.0 * pad + 20.0
    );
    for (panel, (title, ymax)) in [("val top-1 (%)", 100.0), ("train loss", lmax)]
        .iter()
        .enumerate()
    {
        let x0 = pad + panel as f64 * (w + pad);
        svg += &format!(
            "<rect x='{x0}' y='{pad}' width='{w}' height='{h}' fill='none' stroke='#888'/>\n<text x='{}' y='{}'>{title}</text>\n<text x='{}' y='{}'>wall-clock seconds (0 to {tmax:.0})</text>\n<text x='{}' y='{}'>{ymax:.2}</text>\n",
            x0, pad - 8.0, x0 + w / 2.0 - 80.0, pad + h + 20.0, x0 - 45.0, pad + 10.0
        );
        for (i, (name, acc, loss)) in series.iter().enumerate() {
            let pts = if panel == 0 { acc } else { loss };
            let path: Vec<String> = pts
                .iter()
                .map(|(t, y)| {
                    format!(
                        "{:.1},{:.1}",
                        x0 + t / tmax * w,
                        pad + h - (y / ymax).clamp(0.0, 1.0) * h
                    )
                })
                .collect();
            let c = colours[i % colours.len()];
            svg += &format!(
                "<polyline fill='none' stroke='{c}' stroke-width='2' points='{}'/>\n",
                path.join(" ")
            );
            if panel == 0 {
                svg += &format!(
                    "<text x='{}' y='{}' fill='{c}'>{name}</text>\n",
                    x0 + 10.0,
                    pad + 20.0 + 16.0 * i as f64
                );
            }
        }
    }
    svg += "</svg>\n";
    let tmp = out.with_extension("svg.tmp");
    std::fs::write(&tmp, svg).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, out).map_err(|e| format!("{}: {e}", out.display()))
}

/// The main job: synthetic data if missing, baseline and multigrid training of the tiny
/// SlowFast, a side-by-side table and the accuracy-vs-time plot.
pub fn demo(data: &Path, out: &Path, device: Option<&str>) -> Result<(), String> {
    if !data.join("train.mgstore").exists() {
        super::data::gen_data(&super::data::GenOptions {
            out: data.to_path_buf(),
            clips: 1800,
            frames: 32,
            size: 64,
            seed: 0,
            val_fraction: 0.1,
            store: true,
            videos: true,
            fps: 30,
        })?;
    }
    let _ = std::fs::remove_dir_all(out);
    let mut rows = Vec::new();
    for (name, config) in [
        ("baseline", "configs/synthetic_slowfast_tiny.json"),
        (
            "multigrid",
            "configs/synthetic_slowfast_tiny_multigrid.json",
        ),
    ] {
        eprintln!("== {name}");
        let s = train(
            Path::new(config),
            &out.join(name),
            false,
            device,
            Some(data),
        )?;
        rows.push((name, s));
    }
    let fmt =
        |a: Option<multigrid::train::Accuracy>| a.map_or("-".into(), |a| format!("{:.1}", a.top1));
    println!(
        "\n{:<10} {:>10} {:>7} {:>8} {:>10} {:>10}",
        "run", "wall s", "steps", "clips", "val top-1", "test top-1"
    );
    for (name, s) in &rows {
        println!(
            "{:<10} {:>10.1} {:>7} {:>8} {:>10} {:>10}",
            name,
            s.wall_seconds,
            s.steps,
            s.clips_seen,
            fmt(s.final_val),
            fmt(s.test)
        );
    }
    println!(
        "wall-clock speedup of multigrid over the baseline: {:.2}x",
        rows[0].1.wall_seconds / rows[1].1.wall_seconds
    );
    let chart = out.join("accuracy_vs_time.svg");
    plot(&[out.join("baseline"), out.join("multigrid")], &chart)?;
    println!("plot: {}", chart.display());
    Ok(())
}
