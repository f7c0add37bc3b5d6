//! A harder synthetic action task for the speedup benchmark (`gen-data --task hard`), built so
//! that accuracy keeps rising over a whole schedule as Kinetics' does, rather than saturating
//! in a few epochs like the 12-class task: 24 classes, each of the 12 motions of the simple
//! task (8 directions, 2 senses of rotation, approach, recede) at a slow or a fast rate, the
//! lowest and the highest third of the simple task's range. The motions are learnt first (the
//! network finds them as quickly as in the simple task: a tiny SlowFast does not start
//! learning at all on fainter cues within the benchmark's budget); telling the rates apart
//! takes an estimate of speed over many frames, which the training crop's scale jitter blurs
//! and small crops coarsen, so accuracy keeps improving late. With rates from two halves that
//! meet, the benchmark's network never learnt them: validation accuracy stopped at the
//! motions'. Background, object, appearance and exact rate are random per clip.

use super::synthetic;

/// Number of classes: the simple task's 12 motions x 2 rates.
pub const NUM_CLASSES: usize = 2 * synthetic::CLASSES.len();

/// Keeps the hard task's clips apart from the simple task's of the same seed and index.
const STREAM: u64 = 0x4A2D_0000;

/// (motion of the simple task, fast) of a class.
fn class(label: u32) -> (u32, bool) {
    let motions = synthetic::CLASSES.len() as u32;
    (label % motions, label >= motions)
}

/// Class names in label order, e.g. "move_up_slow", "rotate_clockwise_fast".
pub fn class_names() -> Vec<String> {
    (0..NUM_CLASSES as u32)
        .map(|l| {
            let (motion, fast) = class(l);
            let rate = if fast { "fast" } else { "slow" };
            format!("{}_{rate}", synthetic::CLASSES[motion as usize])
        })
        .collect()
}

/// Label of clip `index`: classes in turn, so every class has the same share.
pub fn label_of(index: u64) -> u32 {
    (index % NUM_CLASSES as u64) as u32
}

/// Renders clip `index` of the hard task of `seed`: `num_frames` RGB frames of `size` x
/// `size`, [frames][size][size][3]. Deterministic.
pub fn render_clip(seed: u64, index: u64, num_frames: u32, size: u32) -> Vec<u8> {
    let (motion, fast) = class(label_of(index));
    synthetic::render_clip_at_speed(seed ^ STREAM, index, motion, Some(fast), num_frames, size).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_the_simple_motions_at_two_rates() {
        let names = class_names();
        assert_eq!(names.len(), NUM_CLASSES);
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), NUM_CLASSES);
        assert_eq!(names[0], "move_right_slow");
        assert_eq!(names[12], "move_right_fast");
        assert_eq!(names[23], "recede_fast");
    }

    #[test]
    fn deterministic_sized_and_rate_dependent() {
        assert_eq!(render_clip(1, 5, 8, 32), render_clip(1, 5, 8, 32));
        assert_ne!(render_clip(1, 5, 8, 32), render_clip(2, 5, 8, 32));
        assert_eq!(render_clip(0, 3, 6, 40).len(), 6 * 40 * 40 * 3);
        // Same clip, other half of the rate range: the same background (the top row, far
        // from an object moving right), another motion.
        let slow = synthetic::render_clip_at_speed(9, 4, 0, Some(false), 8, 32).0;
        let fast = synthetic::render_clip_at_speed(9, 4, 0, Some(true), 8, 32).0;
        assert_eq!(slow[..32 * 3], fast[..32 * 3]);
        assert_ne!(slow, fast);
        // No half given is the simple task's clip of that class.
        assert_eq!(
            synthetic::render_clip_at_speed(9, 4, 0, None, 8, 32).0,
            synthetic::render_clip_of(9, 4, 0, 8, 32)
        );
    }
}
