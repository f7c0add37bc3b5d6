//! `multigrid build-store`: a split's clips in one memory-mapped file, as decoded frames
//! (`.mgstore`) or JPEG frames (`.mgframes`).

use std::path::Path;
use std::time::Instant;

use multigrid::data::frame_store::encode_frames;
use multigrid::data::{resize::resize_short_side, Dataset, FrameStoreWriter, StoreWriter};
use rayon::prelude::*;

pub fn run(a: &crate::BuildStoreArgs) -> Result<(), String> {
    build_store(&a.data, &a.split, &a.out, a.short_side, a.format, a.quality)
}

/// What `build-store` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreFormat {
    /// Decoded u8 frames (.mgstore).
    Raw,
    /// Each frame a JPEG (.mgframes).
    Jpeg,
}

/// One of the two store writers.
enum AnyWriter {
    Raw(StoreWriter),
    Jpeg(FrameStoreWriter),
}

/// Stores every clip of a split (its video list, else its clip store), optionally pre-resized,
/// as decoded frames or as JPEG frames.
fn build_store(
    data: &Path,
    split: &str,
    out: &Path,
    short_side: Option<u32>,
    format: StoreFormat,
    quality: u8,
) -> Result<(), String> {
    let csv = data.join(format!("{split}.csv"));
    let source = if csv.exists() {
        Dataset::video_list(data, split)
    } else {
        Dataset::store(data.join(format!("{split}.mgstore")))
    }
    .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut writer = match format {
        StoreFormat::Raw => AnyWriter::Raw(StoreWriter::create(out).map_err(|e| e.to_string())?),
        StoreFormat::Jpeg => {
            AnyWriter::Jpeg(FrameStoreWriter::create(out, quality).map_err(|e| e.to_string())?)
        }
    };
    let jpeg = (format == StoreFormat::Jpeg).then_some(quality);
    let n = source.len();
    let mut failed = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(32) {
        let decoded: Vec<_> = chunk
            .par_iter()
            .map(|&i| {
                let clip = read_whole(&source, i, short_side)?;
                // Encoding is the slow part of a JPEG store: on the workers too.
                let encoded = match jpeg {
                    Some(q) => {
                        let (f, t, h, w, _) = &clip;
                        Some(encode_frames(f, *t, *h, *w, q).map_err(|e| e.to_string())?)
                    }
                    None => None,
                };
                Ok::<_, String>((clip, encoded, source.label(i).map_err(|e| e.to_string())?))
            })
            .collect();
        for (result, &i) in decoded.into_iter().zip(chunk) {
            match result {
                Ok(((frames, t, h, w, fps), encoded, label)) => {
                    match (&mut writer, encoded) {
                        (AnyWriter::Raw(wr), _) => wr.add_at_fps(&frames, t, h, w, label, fps),
                        (AnyWriter::Jpeg(wr), Some(enc)) => wr.add_encoded(&enc, h, w, label, fps),
                        (AnyWriter::Jpeg(_), None) => unreachable!("encoded above"),
                    }
                    .map_err(|e| e.to_string())?;
                }
                Err(e) => {
                    failed += 1;
                    eprintln!(
                        "multigrid: skipping clip {i} of {}: {e}",
                        source_name(&source)
                    );
                }
            }
        }
    }
    match writer {
        AnyWriter::Raw(w) => w.finish(),
        AnyWriter::Jpeg(w) => w.finish(),
    }
    .map_err(|e| e.to_string())?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    println!(
        "stored {} of {n} clips of {} in {} ({:.1} MB) in {:.1} s",
        n - failed,
        source_name(&source),
        out.display(),
        bytes as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn source_name(d: &Dataset) -> String {
    match d {
        Dataset::VideoList { list, .. } => list.display().to_string(),
        Dataset::Store(s) => s.path().display().to_string(),
        other => format!("{other:?}"),
    }
}

/// Frames, count, height, width and frame rate (when known) of clip `i`, resized so its short
/// side is `short_side` when that is smaller.
fn read_whole(source: &Dataset, i: usize, short_side: Option<u32>) -> Result<Clip, String> {
    let (frames, n, h, w, fps) = match source {
        Dataset::VideoList { entries, .. } => {
            let (f, n, h, w, fps) = decode_all(&entries[i].0)?;
            (f, n, h, w, Some(fps))
        }
        Dataset::Store(s) => {
            let info = s.info(i).map_err(|e| e.to_string())?;
            let f = s.frames(i).map_err(|e| e.to_string())?.to_vec();
            (f, info.num_frames, info.height, info.width, info.fps())
        }
        other => return Err(format!("cannot store from {other:?}")),
    };
    Ok(match short_side {
        Some(s) if s < h.min(w) => {
            let (f, rh, rw) = resize_short_side(&frames, n, h, w, s);
            (f, n, rh, rw, fps)
        }
        _ => (frames, n, h, w, fps),
    })
}

/// Frames, count, height, width and frame rate of a clip.
type Clip = (Vec<u8>, u32, u32, u32, Option<f64>);

/// Frames, count, height, width and frame rate of a whole video.
type Decoded = (Vec<u8>, u32, u32, u32, f64);

#[cfg(feature = "video")]
fn decode_all(path: &Path) -> Result<Decoded, String> {
    use multigrid::data::video;
    let info = video::probe(path).map_err(|e| e.to_string())?;
    let d = video::decode_range(path, 0, info.num_frames - 1).map_err(|e| e.to_string())?;
    Ok((d.frames, d.num_frames, d.height, d.width, info.fps))
}

#[cfg(not(feature = "video"))]
fn decode_all(path: &Path) -> Result<Decoded, String> {
    Err(format!(
        "{}: this build has no video decoding (the `video` feature is off)",
        path.display()
    ))
}
