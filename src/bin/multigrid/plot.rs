//! `multigrid plot`: accuracy and loss against wall-clock time for run directories.

use std::path::{Path, PathBuf};

pub fn run(a: &crate::PlotArgs) -> Result<(), String> {
    plot(&a.runs, &a.out)
}

/// Loss and accuracy against wall-clock time for one or more runs, as an SVG chart.
pub fn plot(runs: &[PathBuf], out: &Path) -> Result<(), String> {
    let curves = runs
        .iter()
        .enumerate()
        .map(|(i, run)| {
            let name = run
                .file_name()
                .map_or("run".into(), |n| n.to_string_lossy().into_owned());
            super::chart::read(run, &name, i, 0)
        })
        .collect::<Result<Vec<_>, String>>()?;
    let png = super::chart::draw(&curves, out)?;
    println!("plot: {} and {}", out.display(), png.display());
    Ok(())
}
