//! A synthetic action dataset that needs time to solve: a textured object moves in one of 8
//! directions, rotates clockwise or counter-clockwise, approaches or recedes, over a cluttered
//! static background with per-frame noise. Appearance, start position, size, speed and clutter
//! are random per clip, so no single frame tells the class: the direction of motion, the sense
//! of rotation and the sign of the scale change only show across frames.

use crate::collate::Rng;

/// Class names, in label order.
pub const CLASSES: [&str; 12] = [
    "move_right",
    "move_up_right",
    "move_up",
    "move_up_left",
    "move_left",
    "move_down_left",
    "move_down",
    "move_down_right",
    "rotate_clockwise",
    "rotate_counterclockwise",
    "approach",
    "recede",
];

/// Label of clip `index`: classes in turn, so every class has the same share.
pub fn label_of(index: u64) -> u32 {
    (index % CLASSES.len() as u64) as u32
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    Square,
    Disc,
    Diamond,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Square => "square",
            Shape::Disc => "disc",
            Shape::Diamond => "diamond",
        }
    }
}

/// Renders clip `index` of the dataset of `seed`: `num_frames` RGB frames of `size` x `size`,
/// [frames][size][size][3], showing class [`label_of`]`(index)`. Deterministic.
pub fn render_clip(seed: u64, index: u64, num_frames: u32, size: u32) -> Vec<u8> {
    render_clip_of(seed, index, label_of(index), num_frames, size)
}

/// Renders clip `index` of the dataset of `seed` showing class `label` (an index into
/// [`CLASSES`]; values past the end act as the last class). The background, the object's
/// shape and colours depend on `seed` and `index` only; the motion on `label`. Deterministic.
pub fn render_clip_of(seed: u64, index: u64, label: u32, num_frames: u32, size: u32) -> Vec<u8> {
    render_clip_with_shape(seed, index, label, num_frames, size).0
}

/// [`render_clip_of`], and the name of the object's shape ("square", "disc" or "diamond"),
/// for datasets that describe the object in words.
pub fn render_clip_with_shape(
    seed: u64,
    index: u64,
    label: u32,
    num_frames: u32,
    size: u32,
) -> (Vec<u8>, &'static str) {
    render_clip_at_speed(seed, index, label, None, num_frames, size)
}

/// [`render_clip_with_shape`] with the class's rate (the speed of a move, of a rotation, of
/// the scale change) drawn from the lowest third of its range (`Some(false)`) or the highest
/// third (`Some(true)`) instead of the whole (`None`, the same clip as
/// [`render_clip_with_shape`]). The middle third is left out so that the two rates can be told
/// apart: with halves that meet, the tiny benchmark network never learnt them at all.
pub fn render_clip_at_speed(
    seed: u64,
    index: u64,
    label: u32,
    fast: Option<bool>,
    num_frames: u32,
    size: u32,
) -> (Vec<u8>, &'static str) {
    let label = label.min(CLASSES.len() as u32 - 1);
    let rate = |v: f32| match fast {
        None => v,
        Some(fast) => (v + 2.0 * f32::from(u8::from(fast))) / 3.0,
    };
    let mut rng = Rng::new(seed, 0x5EED, index);
    let n = size as usize;
    let fsize = size as f32;

    // Static background: a smooth two-colour pattern plus fixed grain, then clutter discs.
    let c0 = random_colour(&mut rng);
    let c1 = random_colour(&mut rng);
    let (fx, fy, ph) = (
        0.02 + 0.08 * rng.uniform() as f32,
        0.02 + 0.08 * rng.uniform() as f32,
        std::f32::consts::TAU * rng.uniform() as f32,
    );
    let mut background = vec![0u8; n * n * 3];
    for y in 0..n {
        for x in 0..n {
            let t = 0.5 + 0.5 * ((x as f32 * fx + y as f32 * fy + ph).sin());
            let grain = (hash(index, (y * n + x) as u64) % 24) as f32 - 12.0;
            for c in 0..3 {
                let v = c0[c] * (1.0 - t) + c1[c] * t + grain;
                background[(y * n + x) * 3 + c] = v.clamp(0.0, 255.0) as u8;
            }
        }
    }
    for _ in 0..(3 + rng.int_inclusive(0, 4)) {
        let (cx, cy) = (rng.uniform() as f32 * fsize, rng.uniform() as f32 * fsize);
        let r = fsize * (0.03 + 0.07 * rng.uniform() as f32);
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

    // The object: shape, two-colour stripes that turn with it, size, start and motion.
    let shape = match rng.int_inclusive(0, 2) {
        0 => Shape::Square,
        1 => Shape::Disc,
        _ => Shape::Diamond,
    };
    // Complementary stripe colours: the object always stands out from the clutter.
    let a = random_colour(&mut rng);
    let b = [255.0 - a[0], 255.0 - a[1], 255.0 - a[2]];
    let stripes = 0.25 + 0.35 * rng.uniform() as f32;
    let mut radius = fsize * (0.12 + 0.08 * rng.uniform() as f32);
    let mut angle = std::f32::consts::TAU * rng.uniform() as f32;
    let frames = num_frames.max(1) as f32;
    let mut u = || rng.uniform() as f32;
    // The classes that do not travel still drift a little, so stillness is no shortcut.
    let drift = |v: f32| (v - 0.5) * fsize * 0.08 / frames;
    let small_spin = |v: f32| (v - 0.5) * 0.02;
    let (vx, vy, spin, growth) = match label {
        0..=7 => {
            let dir = label as f32 * std::f32::consts::FRAC_PI_4;
            // Travel 30-55% of the frame over the clip.
            let speed = fsize * (0.30 + 0.25 * rate(u())) / frames;
            (speed * dir.cos(), -speed * dir.sin(), small_spin(u()), 0.0)
        }
        8 | 9 => {
            // Image y points down, so a positive angle step turns clockwise on screen.
            let w = (0.04 + 0.05 * rate(u())) * if label == 8 { 1.0 } else { -1.0 };
            (drift(u()), drift(u()), w, 0.0)
        }
        _ => {
            // The radius changes by a factor of 1.6-2.2 over the clip.
            let k = (1.6 + 0.6 * rate(u())).ln() / frames;
            let growth = if label == 10 { k } else { -k };
            (drift(u()), drift(u()), small_spin(u()), growth)
        }
    };
    if label == 11 {
        radius *= 1.9;
    }
    // Start so that the whole path stays near the frame's middle.
    let (travel_x, travel_y) = (vx * frames, vy * frames);
    let jitter = fsize * 0.12;
    let mut cx = fsize / 2.0 - travel_x / 2.0 + (rng.uniform() as f32 - 0.5) * jitter;
    let mut cy = fsize / 2.0 - travel_y / 2.0 + (rng.uniform() as f32 - 0.5) * jitter;

    let mut out = Vec::with_capacity(num_frames as usize * n * n * 3);
    for t in 0..num_frames {
        let start = out.len();
        out.extend_from_slice(&background);
        let frame = &mut out[start..];
        // Sensor noise changes every frame.
        for (i, v) in frame.iter_mut().enumerate().step_by(7) {
            let noise = (hash(index ^ u64::from(t) << 32, i as u64) % 17) as i16 - 8;
            *v = (i16::from(*v) + noise).clamp(0, 255) as u8;
        }
        let (sin, cos) = angle.sin_cos();
        let r = radius;
        let reach = r * 1.5;
        fill(
            frame,
            n,
            cx - reach,
            cy - reach,
            cx + reach,
            cy + reach,
            |x, y| {
                let (dx, dy) = (x - cx, y - cy);
                // Object coordinates: undo the rotation.
                let (u, v) = (cos * dx + sin * dy, -sin * dx + cos * dy);
                let inside = match shape {
                    Shape::Square => u.abs() < r && v.abs() < r,
                    Shape::Disc => u * u + v * v < r * r,
                    Shape::Diamond => u.abs() + v.abs() < r * 1.3,
                };
                // A marker near one edge makes the rotation of symmetric shapes visible.
                let marker = (u - 0.6 * r).powi(2) + v * v < (0.22 * r).powi(2);
                inside.then(|| {
                    if marker {
                        [255.0 - a[0], 255.0 - a[1], 255.0 - a[2]]
                    } else if ((u * stripes).floor() as i32) % 2 == 0 {
                        a
                    } else {
                        b
                    }
                })
            },
        );
        cx += vx;
        cy += vy;
        angle += spin;
        radius *= growth.exp();
    }
    (out, shape.name())
}

pub(super) fn random_colour(rng: &mut Rng) -> [f32; 3] {
    [
        (rng.uniform() * 255.0) as f32,
        (rng.uniform() * 255.0) as f32,
        (rng.uniform() * 255.0) as f32,
    ]
}

/// Paints the pixels of the box [x0, x1) x [y0, y1) for which `paint` gives a colour.
pub(super) fn fill(
    frame: &mut [u8],
    n: usize,
    x0: f32,
    y0: f32,
    x1: f32,
    y1: f32,
    paint: impl Fn(f32, f32) -> Option<[f32; 3]>,
) {
    let clampi = |v: f32| (v.max(0.0) as usize).min(n);
    for y in clampi(y0)..clampi(y1 + 1.0) {
        for x in clampi(x0)..clampi(x1 + 1.0) {
            if let Some(col) = paint(x as f32 + 0.5, y as f32 + 0.5) {
                let p = (y * n + x) * 3;
                frame[p] = col[0] as u8;
                frame[p + 1] = col[1] as u8;
                frame[p + 2] = col[2] as u8;
            }
        }
    }
}

pub(super) fn hash(a: u64, b: u64) -> u64 {
    Rng::new(a, b, 0x9A1).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn centroid_and_area(frame: &[u8], reference: &[u8], n: usize) -> (f32, f32, f32) {
        // Pixels that differ strongly from the object-free reference frame belong to the object.
        let (mut sx, mut sy, mut count) = (0.0f32, 0.0f32, 0.0f32);
        for y in 0..n {
            for x in 0..n {
                let p = (y * n + x) * 3;
                let d: i32 = (0..3)
                    .map(|c| (i32::from(frame[p + c]) - i32::from(reference[p + c])).abs())
                    .sum();
                if d > 60 {
                    sx += x as f32;
                    sy += y as f32;
                    count += 1.0;
                }
            }
        }
        (sx / count.max(1.0), sy / count.max(1.0), count)
    }

    #[test]
    fn deterministic_and_labelled() {
        assert_eq!(render_clip(3, 5, 4, 32), render_clip(3, 5, 4, 32));
        assert_ne!(render_clip(3, 5, 4, 32), render_clip(4, 5, 4, 32));
        assert_eq!(render_clip(1, 0, 6, 40).len(), 6 * 40 * 40 * 3);
        // An explicit class: the same clip for the index's own class, another for another.
        assert_eq!(
            render_clip_of(3, 17, label_of(17), 4, 32),
            render_clip(3, 17, 4, 32)
        );
        assert_ne!(render_clip_of(3, 17, 0, 4, 32), render_clip(3, 17, 4, 32));
        let (clip, shape) = render_clip_with_shape(3, 17, 0, 4, 32);
        assert_eq!(clip, render_clip_of(3, 17, 0, 4, 32));
        assert!(["square", "disc", "diamond"].contains(&shape));
        let labels: Vec<u32> = (0..24).map(label_of).collect();
        assert!((0..12).all(|c| labels.iter().filter(|&&l| l == c).count() == 2));
    }

    #[test]
    fn motion_follows_the_class() {
        // The centroid of the changing pixels moves right for class 0 and left for class 4;
        // the changed area grows for "approach" (10) and shrinks for "recede" (11).
        let n = 64usize;
        let frames = 32;
        let measure = |index: u64| {
            let clip = render_clip(7, index, frames, n as u32);
            let f = n * n * 3;
            let bg = {
                // The object-free reference: the per-pixel median over time is the background.
                let mut bg = vec![0u8; f];
                for (i, v) in bg.iter_mut().enumerate() {
                    let mut vals: Vec<u8> = (0..frames as usize).map(|t| clip[t * f + i]).collect();
                    vals.sort_unstable();
                    *v = vals[vals.len() / 2];
                }
                bg
            };
            let first = centroid_and_area(&clip[..f], &bg, n);
            let last = centroid_and_area(&clip[(frames as usize - 1) * f..], &bg, n);
            (
                last.0 - first.0,
                last.1 - first.1,
                last.2 / first.2.max(1.0),
            )
        };
        let (dx, _, _) = measure(0);
        assert!(dx > 8.0, "move_right moved {dx}");
        let (dx, _, _) = measure(4);
        assert!(dx < -8.0, "move_left moved {dx}");
        let (_, dy, _) = measure(2);
        assert!(dy < -8.0, "move_up moved {dy}");
        let (_, _, growth) = measure(10);
        assert!(growth > 1.5, "approach grew {growth}");
        let (_, _, growth) = measure(11);
        assert!(growth < 0.7, "recede grew {growth}");
    }
}
