//! Charades' and SSv2's JPEG frames reach the network in PySlowFast's channel order. PySlowFast
//! decodes them with cv2 (BGR) and DATA.REVERSE_INPUT_CHANNEL reverses that to RGB; we decode
//! RGB. tests/fixtures/pyslowfast_frames holds four JPEG frames and what PySlowFast's own
//! loading code made of them with the flag off and on (`scripts/pyslowfast_fixture.py frames`:
//! retry_load_images, tensor_normalize with a different mean and std per channel,
//! pack_pathway_output); here the same frames go through our Charades frame list.

use std::path::{Path, PathBuf};

use multigrid::collate::{self, ClipParams, Draw, Normalize};
use multigrid::data::frame_list::FrameLists;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pyslowfast_frames")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("a list of numbers")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

fn three(v: &Value) -> [f32; 3] {
    floats(v).try_into().expect("three numbers")
}

/// A Charades frame list (`train.csv`) of the fixture frames, as one video.
fn frame_list(expected: &Value) -> (PathBuf, FrameLists) {
    let dir = std::env::temp_dir().join(format!("mg-frame-channels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut csv = String::from("original_vido_id video_id frame_id path labels\n");
    for (i, name) in expected["frames"].as_array().unwrap().iter().enumerate() {
        let path = fixtures().join(name.as_str().unwrap());
        csv += &format!("clip 0 {i} {} \"3\"\n", path.display());
    }
    std::fs::write(dir.join("train.csv"), csv).unwrap();
    let lists = FrameLists::charades(&dir, "train", "").unwrap();
    (dir, lists)
}

#[test]
fn frame_lists_feed_pyslowfasts_channel_order_with_and_without_reverse_input_channel() {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    let expected: Value = serde_json::from_str(&text).unwrap();
    let (h, w) = (
        expected["height"].as_u64().unwrap() as u32,
        expected["width"].as_u64().unwrap() as u32,
    );
    assert_eq!(
        h, w,
        "the fixture frames are square, so the crop is the whole frame"
    );
    let t = expected["frames"].as_array().unwrap().len() as u32;
    let alpha = expected["alpha"].as_u64().unwrap() as u32;
    let (mean, std) = (three(&expected["mean"]), three(&expected["std"]));
    // Two grey levels of JPEG decoder difference (cv2's libjpeg against the image crate); a
    // swapped channel is 105 levels or more away (red 200-230, blue 20-95).
    let tol = 2.0 / 255.0 / std.iter().cloned().fold(f32::INFINITY, f32::min);
    let (dir, lists) = frame_list(&expected);
    for flag in [false, true] {
        let want = &expected[format!("reverse_input_channel_{flag}")];
        // The config's normalisation, as collate::normalize_of builds it from `data`.
        let norm = Normalize {
            mean,
            std,
            reverse_channels: flag,
        };
        let mut fast = vec![0f32; collate::batch_len(1, t, w)];
        lists
            .collate_clip(
                0,
                t,
                w,
                &norm,
                |frames, fh, fw| {
                    assert_eq!((frames, fh, fw), (t, h, w));
                    // The whole clip at its own size: the spatial sampling is the identity.
                    Draw::from(ClipParams {
                        start_frame: 0,
                        stride: 1,
                        short_side: h,
                        crop_x: 0,
                        crop_y: 0,
                        flip: false,
                    })
                },
                &mut fast,
            )
            .unwrap();
        let ts = collate::slow_indices(t, alpha).len() as u32;
        let mut slow = vec![0f32; collate::batch_len(1, ts, w)];
        collate::pack_slow(&fast, 1, t, w, alpha, &mut slow).unwrap();
        for (name, ours, theirs) in [
            ("fast", &fast, floats(&want["fast"])),
            ("slow", &slow, floats(&want["slow"])),
        ] {
            assert_eq!(ours.len(), theirs.len(), "{name}");
            let (worst, at) = ours
                .iter()
                .zip(&theirs)
                .map(|(a, b)| (a - b).abs())
                .enumerate()
                .fold(
                    (0f32, 0),
                    |(m, i), (j, d)| if d > m { (d, j) } else { (m, i) },
                );
            let plane = (ours.len() / 3) as f32;
            assert!(
                worst <= tol,
                "REVERSE_INPUT_CHANNEL {flag}, {name} pathway: value {at} (channel {}) is {} \
                 where PySlowFast has {} ({worst} apart, tolerance {tol})",
                (at as f32 / plane) as usize,
                ours[at],
                theirs[at]
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
