//! Validation accuracy and training loss against wall-clock time for a set of runs, drawn with
//! plotters as an SVG and a PNG of the same chart.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use multigrid::train::metrics::{read_records, Record};
use plotters::coord::Shift;
use plotters::prelude::*;

/// One run's curves: (wall seconds, val top-1 %) and (wall seconds, train loss).
pub struct Curve {
    pub name: String,
    /// Runs of one group (baseline, multigrid) share a hue; `shade` tells seeds apart.
    pub group: usize,
    pub shade: usize,
    pub acc: Vec<(f64, f64)>,
    pub loss: Vec<(f64, f64)>,
}

/// The curves of the run in `dir` from its metrics.jsonl.
pub fn read(dir: &Path, name: &str, group: usize, shade: usize) -> Result<Curve, String> {
    let records = read_records(&dir.join("metrics.jsonl")).map_err(|e| e.to_string())?;
    Ok(curve(&records, name, group, shade))
}

/// A run's curves from its records: val top-1 of the evaluations, loss of the train lines.
pub fn curve(records: &[Record], name: &str, group: usize, shade: usize) -> Curve {
    let (mut acc, mut loss) = (Vec::new(), Vec::new());
    for r in records {
        match r {
            Record::Eval(e) if e.top1.is_finite() => acc.push((e.wall_s, e.top1)),
            Record::Train(t) if t.loss.is_finite() => loss.push((t.wall_s, t.loss)),
            _ => {}
        }
    }
    Curve {
        name: name.to_string(),
        group,
        shade,
        acc,
        loss,
    }
}

/// Where plotters finds its font: DejaVu Sans (Debian's fonts-dejavu-core, installed by
/// scripts/setup.sh), or the file MULTIGRID_FONT names.
const FONT_FILES: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn register_font() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let wanted: Vec<PathBuf> = std::env::var_os("MULTIGRID_FONT")
            .map(PathBuf::from)
            .into_iter()
            .chain(FONT_FILES.iter().map(PathBuf::from))
            .collect();
        let path = wanted.iter().find(|p| p.exists()).ok_or_else(|| {
            format!(
                "no font for the chart's text: install fonts-dejavu-core or set MULTIGRID_FONT to a .ttf (looked at {})",
                FONT_FILES.join(", ")
            )
        })?;
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // plotters keeps fonts for the process's life.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{}: not a font plotters can read", path.display()))
    })
    .clone()
}

/// Writes the chart as `svg` and as the same name with `.png`; returns the PNG's path.
pub fn draw(curves: &[Curve], svg: &Path) -> Result<PathBuf, String> {
    register_font()?;
    let size = (1200u32, 460u32);
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", svg.display());
    let tmp = svg.with_extension("tmp.svg");
    {
        let root = SVGBackend::new(&tmp, size).into_drawing_area();
        panels(&root, curves)?;
        root.present().map_err(|e| err(&e))?;
    }
    std::fs::rename(&tmp, svg).map_err(|e| err(&e))?;
    let png = svg.with_extension("png");
    let mut pixels = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        panels(&root, curves)?;
        root.present().map_err(|e| err(&e))?;
    }
    let tmp = png.with_extension("tmp.png");
    image::save_buffer(
        &tmp,
        &pixels,
        size.0,
        size.1,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &png).map_err(|e| format!("{}: {e}", png.display()))?;
    Ok(png)
}

/// Blues for the first group, reds for the second, then greens; darker for later shades.
fn colour(group: usize, shade: usize) -> RGBColor {
    const HUES: [[(u8, u8, u8); 3]; 3] = [
        [(31, 119, 180), (23, 80, 140), (90, 160, 220)],
        [(214, 39, 40), (150, 20, 25), (240, 110, 110)],
        [(44, 160, 44), (20, 110, 20), (110, 200, 110)],
    ];
    let (r, g, b) = HUES[group % 3][shade % 3];
    RGBColor(r, g, b)
}

fn panels<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, curves: &[Curve]) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |x: &dyn std::fmt::Display| x.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let halves = root.split_evenly((1, 2));
    let tmax = curves
        .iter()
        .flat_map(|c| c.acc.iter().chain(&c.loss).map(|p| p.0))
        .fold(1.0f64, f64::max)
        * 1.02;
    let lmax = curves
        .iter()
        .flat_map(|c| c.loss.iter().map(|p| p.1))
        .fold(0.1f64, f64::max)
        * 1.05;
    for (panel, area) in halves.iter().enumerate() {
        let (title, ymax, ylabel) = if panel == 0 {
            ("Validation accuracy", 100.0, "val top-1 (%)")
        } else {
            ("Training loss", lmax, "train loss")
        };
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..tmax, 0f64..ymax)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc("wall-clock time (s)")
            .y_desc(ylabel)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|x| e(&x))?;
        for c in curves {
            let pts = if panel == 0 { &c.acc } else { &c.loss };
            let col = colour(c.group, c.shade);
            let series = chart
                .draw_series(LineSeries::new(pts.iter().copied(), col.stroke_width(2)))
                .map_err(|x| e(&x))?;
            if panel == 0 {
                series.label(c.name.clone()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2))
                });
            }
        }
        if panel == 0 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .label_font(("sans-serif", 13))
                .border_style(BLACK)
                .background_style(WHITE.mix(0.85))
                .draw()
                .map_err(|x| e(&x))?;
        }
    }
    Ok(())
}
