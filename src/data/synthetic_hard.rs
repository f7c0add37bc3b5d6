//! A harder synthetic action task for the speedup benchmark (`gen-data --task hard`), built so
//! that accuracy keeps rising over a whole schedule as Kinetics' does, rather than saturating
//! in a few epochs like the 12-class task: 24 classes, each an ordered pair of motions (the
//! object moves in direction A, then turns to B; A then B is not B then A) at one of two
//! speeds. The object is small (its radius 5-8% of the frame, so resolution matters), marked
//! only by its stripes among 2-4 plain distractors that move in straight lines at similar
//! speeds, over clutter with per-frame noise. Appearance, size, start, turning time and the
//! distractors are random per clip.

use super::synthetic::{fill, hash, random_colour};
use crate::collate::Rng;

/// The four directions, in image coordinates (y points down).
const DIRECTIONS: [(&str, f32, f32); 4] = [
    ("right", 1.0, 0.0),
    ("up", 0.0, -1.0),
    ("left", -1.0, 0.0),
    ("down", 0.0, 1.0),
];

/// Number of classes: 12 ordered pairs of distinct directions x 2 speeds.
pub const NUM_CLASSES: usize = 24;

/// (first direction, second direction, fast) of a class.
fn class(label: u32) -> (usize, usize, bool) {
    let pair = (label % 12) as usize;
    let first = pair / 3;
    // The three directions other than the first, in order.
    let second = (first + 1 + pair % 3) % 4;
    (first, second, label >= 12)
}

/// Class names in label order, e.g. "right_then_up_slow".
pub fn class_names() -> Vec<String> {
    (0..NUM_CLASSES as u32)
        .map(|l| {
            let (a, b, fast) = class(l);
            format!(
                "{}_then_{}_{}",
                DIRECTIONS[a].0,
                DIRECTIONS[b].0,
                if fast { "fast" } else { "slow" }
            )
        })
        .collect()
}

/// Label of clip `index`: classes in turn, so every class has the same share.
pub fn label_of(index: u64) -> u32 {
    (index % NUM_CLASSES as u64) as u32
}

/// A moving object's path: position at frame 0 and its velocity before and after `turn`.
struct Path {
    x: f32,
    y: f32,
    v0: (f32, f32),
    v1: (f32, f32),
    turn: f32,
}

impl Path {
    fn at(&self, t: f32) -> (f32, f32) {
        let before = t.min(self.turn);
        let after = (t - self.turn).max(0.0);
        (
            self.x + self.v0.0 * before + self.v1.0 * after,
            self.y + self.v0.1 * before + self.v1.1 * after,
        )
    }
}

/// Renders clip `index` of the hard task of `seed`: `num_frames` RGB frames of `size` x
/// `size`, [frames][size][size][3]. Deterministic.
pub fn render_clip(seed: u64, index: u64, num_frames: u32, size: u32) -> Vec<u8> {
    let label = label_of(index);
    let (first, second, fast) = class(label);
    let mut rng = Rng::new(seed, 0x4A2D, index);
    let n = size as usize;
    let fsize = size as f32;
    let frames = num_frames.max(2) as f32;

    // Static clutter: a smooth gradient with grain and a few plain blobs.
    let c0 = random_colour(&mut rng);
    let c1 = random_colour(&mut rng);
    let (fx, fy) = (
        0.02 + 0.1 * rng.uniform() as f32,
        0.02 + 0.1 * rng.uniform() as f32,
    );
    let mut background = vec![0u8; n * n * 3];
    for y in 0..n {
        for x in 0..n {
            let t = 0.5 + 0.5 * ((x as f32 * fx + y as f32 * fy).sin());
            let grain = (hash(index, (y * n + x) as u64) % 32) as f32 - 16.0;
            for c in 0..3 {
                let v = c0[c] * (1.0 - t) + c1[c] * t + grain;
                background[(y * n + x) * 3 + c] = v.clamp(0.0, 255.0) as u8;
            }
        }
    }
    for _ in 0..(4 + rng.int_inclusive(0, 4)) {
        let (cx, cy) = (rng.uniform() as f32 * fsize, rng.uniform() as f32 * fsize);
        let r = fsize * (0.03 + 0.06 * rng.uniform() as f32);
        let col = random_colour(&mut rng);
        fill(
            &mut background,
            n,
            cx - r,
            cy - r,
            cx + r,
            cy + r,
            |x, y| ((x - cx).powi(2) + (y - cy).powi(2) < r * r).then_some(col),
        );
    }

    // Each half of the motion travels 12-20% (slow) or 26-36% (fast) of the frame, so the
    // two speeds do not overlap whatever the turning time.
    let half = frames / 2.0;
    let mut speed = || {
        let share = if fast {
            0.26 + 0.10 * rng.uniform() as f32
        } else {
            0.12 + 0.08 * rng.uniform() as f32
        };
        fsize * share / half
    };
    let (s0, s1) = (speed(), speed());
    let v0 = (DIRECTIONS[first].1 * s0, DIRECTIONS[first].2 * s0);
    let v1 = (DIRECTIONS[second].1 * s1, DIRECTIONS[second].2 * s1);
    let turn = frames * (0.4 + 0.2 * rng.uniform() as f32);
    // Start so that the whole path stays near the frame's middle.
    let end = (
        v0.0 * turn + v1.0 * (frames - turn),
        v0.1 * turn + v1.1 * (frames - turn),
    );
    let jitter = fsize * 0.1;
    let target = Path {
        x: fsize / 2.0 - end.0 / 2.0 + (rng.uniform() as f32 - 0.5) * jitter,
        y: fsize / 2.0 - end.1 / 2.0 + (rng.uniform() as f32 - 0.5) * jitter,
        v0,
        v1,
        turn,
    };
    let radius = fsize * (0.05 + 0.03 * rng.uniform() as f32);
    let a = random_colour(&mut rng);
    let b = [255.0 - a[0], 255.0 - a[1], 255.0 - a[2]];
    let stripes = 0.6 + 0.4 * rng.uniform() as f32;

    // Distractors: plain discs crossing the frame in straight lines at the target's speeds.
    let distractors: Vec<(Path, f32, [f32; 3])> = (0..2 + rng.int_inclusive(0, 2))
        .map(|_| {
            let angle = std::f32::consts::TAU * rng.uniform() as f32;
            let s = fsize * (0.12 + 0.24 * rng.uniform() as f32) / half;
            let v = (angle.cos() * s, angle.sin() * s);
            let path = Path {
                x: fsize * (0.2 + 0.6 * rng.uniform() as f32) - v.0 * half,
                y: fsize * (0.2 + 0.6 * rng.uniform() as f32) - v.1 * half,
                v0: v,
                v1: v,
                turn: frames,
            };
            let r = fsize * (0.04 + 0.04 * rng.uniform() as f32);
            (path, r, random_colour(&mut rng))
        })
        .collect();

    let mut out = Vec::with_capacity(num_frames as usize * n * n * 3);
    for t in 0..num_frames {
        let start = out.len();
        out.extend_from_slice(&background);
        let frame = &mut out[start..];
        let tf = t as f32;
        for (path, r, col) in &distractors {
            let (cx, cy) = path.at(tf);
            let r = *r;
            fill(frame, n, cx - r, cy - r, cx + r, cy + r, |x, y| {
                ((x - cx).powi(2) + (y - cy).powi(2) < r * r).then_some(*col)
            });
        }
        let (cx, cy) = target.at(tf);
        let r = radius;
        fill(frame, n, cx - r, cy - r, cx + r, cy + r, |x, y| {
            ((x - cx).powi(2) + (y - cy).powi(2) < r * r).then(|| {
                if (((x - cx) * stripes).floor() as i32) % 2 == 0 {
                    a
                } else {
                    b
                }
            })
        });
        // Sensor noise changes every frame.
        for (i, v) in frame.iter_mut().enumerate().step_by(3) {
            let noise = (hash(index ^ (u64::from(t) << 32) ^ 0x4A2D, i as u64) % 25) as i16 - 12;
            *v = (i16::from(*v) + noise).clamp(0, 255) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_ordered_pairs_of_distinct_directions_at_two_speeds() {
        let names = class_names();
        assert_eq!(names.len(), NUM_CLASSES);
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), NUM_CLASSES);
        for l in 0..NUM_CLASSES as u32 {
            let (a, b, fast) = class(l);
            assert_ne!(a, b);
            assert_eq!(fast, l >= 12);
        }
        // Order matters: "right then up" and "up then right" are both classes.
        assert!(names.contains(&"right_then_up_slow".to_string()));
        assert!(names.contains(&"up_then_right_slow".to_string()));
    }

    #[test]
    fn deterministic_and_sized() {
        assert_eq!(render_clip(1, 5, 8, 32), render_clip(1, 5, 8, 32));
        assert_ne!(render_clip(1, 5, 8, 32), render_clip(2, 5, 8, 32));
        assert_eq!(render_clip(0, 3, 6, 40).len(), 6 * 40 * 40 * 3);
    }

    #[test]
    fn the_target_turns_between_its_two_directions() {
        // right then down (class 2): the path's end is right of and below its start, and the
        // turn happens in the middle fifth of the clip.
        let (a, b, fast) = class(2);
        assert_eq!(
            (DIRECTIONS[a].0, DIRECTIONS[b].0, fast),
            ("right", "down", false)
        );
        let p = Path {
            x: 0.0,
            y: 0.0,
            v0: (1.0, 0.0),
            v1: (0.0, 1.0),
            turn: 10.0,
        };
        assert_eq!(p.at(5.0), (5.0, 0.0));
        assert_eq!(p.at(15.0), (10.0, 5.0));
    }
}
