//! The one batch assembler: training, precise BN and evaluation all load their clips here. It
//! allocates the batch, collates each clip with the caller's draw, handles a clip that fails
//! to load as the caller's [`Failures`] policy says, and packs the slow pathway. The trainer
//! uploads the result (`Trainer::inputs`), whoever assembled it.

use crate::collate::{self, batch_len, Draw, Normalize, Rng};
use crate::error::{Error, Result};
use crate::plan::Plan;

use super::dataset::{multi_hot, Batch, Dataset};

/// What a batch does with a clip that fails to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failures {
    /// Training: the clip is replaced by one drawn at random from the whole dataset, from a
    /// stream seeded by (`seed`, `epoch`, the slot's first clip), so a rerun replaces it the
    /// same way. The batch fails when one slot's clip fails `max` + 1 times in a row.
    Replace { max: u32, seed: u64, epoch: u64 },
    /// Precise BN: the clip is replaced by the next of the candidates. The batch fails after
    /// `max_in_a_row` + 1 failures in a row.
    Retry { max_in_a_row: u32 },
    /// Evaluation: the clip's error, as the dataset gave it, is the batch's.
    Fail,
}

/// What a batch records of its clips' classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Labels {
    None,
    /// One class per clip (`Batch::labels`).
    Classes,
    /// Multi-hot targets over `classes` classes (`Batch::targets`), from the frames each clip
    /// spans.
    MultiHot {
        classes: usize,
    },
}

/// What [`Assembly::fill`] loaded besides the pixels: the clips actually used (after
/// replacements), their labels (one class each) or multi-hot targets, and the failures.
#[derive(Debug, Default)]
pub struct ClipsLoaded {
    pub indices: Vec<u64>,
    pub labels: Vec<i64>,
    pub targets: Vec<f32>,
    /// `clip {index}: {reason}` for each clip that failed and was replaced.
    pub failures: Vec<String>,
}

/// One slot of a batch while its clip is being loaded.
struct Slot {
    /// The candidate the slot started with: it seeds `Replace`'s stream.
    first: u64,
    /// The clip being tried.
    index: u64,
    /// Failures in a row so far.
    in_a_row: u32,
    /// `Replace`'s draws of replacements, made at the first failure.
    stream: Option<Rng>,
}

/// The draw of dataset clip `index` for a clip of (frames, height, width).
pub type DrawOf<'a> = &'a dyn Fn(u64, u32, u32, u32) -> Draw;

/// How the clips of a batch are loaded: their shape, draw, labels and failure policy.
pub struct Assembly<'a> {
    dataset: &'a Dataset,
    t: u32,
    s: u32,
    /// SlowFast alpha; 0 for a single pathway.
    alpha: u32,
    norm: Normalize,
    target_fps: u32,
    draw: DrawOf<'a>,
    labels: Labels,
    failures: Failures,
    /// Names the batch in the error of a policy that gives up ("step 12", "precise BN").
    what: String,
}

impl<'a> Assembly<'a> {
    /// Clips of `dataset` at T x S x S (`shape`), normalised and sampled at the frame rate of
    /// `plan`'s data config, drawn by `draw`; no labels, and a failed clip fails the batch
    /// until [`labels`](Self::labels) and [`failures`](Self::failures) say otherwise.
    pub fn new(
        dataset: &'a Dataset,
        plan: &Plan,
        shape: [u32; 2],
        alpha: u32,
        draw: DrawOf<'a>,
    ) -> Assembly<'a> {
        Assembly {
            dataset,
            t: shape[0],
            s: shape[1],
            alpha,
            norm: collate::normalize_of(plan),
            target_fps: plan.schedule().config().data.target_fps,
            draw,
            labels: Labels::None,
            failures: Failures::Fail,
            what: "the batch".into(),
        }
    }

    pub fn labels(self, labels: Labels) -> Self {
        Assembly { labels, ..self }
    }

    /// The failure policy, and the batch's name in its errors.
    pub fn failures(self, failures: Failures, what: impl Into<String>) -> Self {
        Assembly {
            failures,
            what: what.into(),
            ..self
        }
    }

    /// Values of one clip's fast pathway: 3 x T x S x S.
    pub fn clip_len(&self) -> usize {
        batch_len(1, self.t, self.s)
    }

    /// The batch of `n` clips taken from `candidates` (a failed clip's replacement too, under
    /// `Retry`), recorded as plan step `step`.
    pub fn assemble(
        &self,
        step: u64,
        n: usize,
        candidates: &mut dyn Iterator<Item = u64>,
    ) -> Result<Batch> {
        let mut fast = vec![0f32; n * self.clip_len()];
        let loaded = self.fill(candidates, &mut fast)?;
        pack(
            step,
            [self.t, self.s],
            self.alpha,
            self.labels,
            fast,
            loaded,
        )
    }

    /// Collates as many clips as `fast` holds ([n, 3, T, S, S]), each slot taking the next of
    /// `candidates`; the clips of one batch may be filled by several calls, one range each.
    pub fn fill(
        &self,
        candidates: &mut dyn Iterator<Item = u64>,
        fast: &mut [f32],
    ) -> Result<ClipsLoaded> {
        let one = self.clip_len();
        if one == 0 || fast.len() % one != 0 {
            return Err(Error::Internal(format!(
                "{} values are not whole clips of {one}",
                fast.len()
            )));
        }
        let n = fast.len() / one;
        let classes = match self.labels {
            Labels::MultiHot { classes } => classes,
            _ => 0,
        };
        let mut loaded = ClipsLoaded {
            targets: vec![0f32; classes * n],
            ..ClipsLoaded::default()
        };
        for (k, out) in fast.chunks_exact_mut(one).enumerate() {
            let (index, span) = self.load_slot(candidates, out, &mut loaded.failures)?;
            let targets = loaded.targets.get_mut(k * classes..(k + 1) * classes);
            self.record_labels(index, span, &mut loaded.labels, targets.unwrap_or(&mut []))?;
            loaded.indices.push(index);
        }
        Ok(loaded)
    }

    /// Loads one slot into `out`: the next candidate, or what replaces it as the policy says.
    /// Returns the clip used and the frames it spans.
    fn load_slot(
        &self,
        candidates: &mut dyn Iterator<Item = u64>,
        out: &mut [f32],
        failures: &mut Vec<String>,
    ) -> Result<(u64, [u32; 2])> {
        let first = self.next_candidate(candidates)?;
        let mut slot = Slot {
            first,
            index: first,
            in_a_row: 0,
            stream: None,
        };
        loop {
            match self.load_clip(slot.index, out) {
                Ok(span) => return Ok((slot.index, span)),
                Err(e) => self.replace(&mut slot, e, candidates, failures)?,
            }
        }
    }

    /// Puts the clip that takes the slot's failed one's place in the slot, or returns the
    /// batch's error.
    fn replace(
        &self,
        slot: &mut Slot,
        e: Error,
        candidates: &mut dyn Iterator<Item = u64>,
        failures: &mut Vec<String>,
    ) -> Result<()> {
        slot.in_a_row += 1;
        let (what, in_a_row) = (&self.what, slot.in_a_row);
        let next = match self.failures {
            Failures::Fail => return Err(e),
            Failures::Replace { max, .. } if in_a_row > max => {
                return Err(Error::Data(format!(
                    "{what}: {in_a_row} clips in a row failed, last: {e}"
                )))
            }
            Failures::Retry { max_in_a_row } if in_a_row > max_in_a_row => {
                return Err(Error::Data(format!(
                    "{what}: {in_a_row} clips in a row failed to load, the last: {e}"
                )))
            }
            Failures::Replace { seed, epoch, .. } => {
                let first = slot.first;
                let stream = slot
                    .stream
                    .get_or_insert_with(|| Rng::new(seed ^ 0xFA11, epoch, first));
                self.draw_replacement(stream)
            }
            Failures::Retry { .. } => self.next_candidate(candidates)?,
        };
        failures.push(format!("clip {}: {e}", slot.index));
        slot.index = next;
        Ok(())
    }

    fn next_candidate(&self, candidates: &mut dyn Iterator<Item = u64>) -> Result<u64> {
        candidates
            .next()
            .ok_or_else(|| Error::Data(format!("{}: no clips left to load", self.what)))
    }

    /// A clip of the whole dataset, uniformly.
    fn draw_replacement(&self, rng: &mut Rng) -> u64 {
        let last = (self.dataset.len() as u64).saturating_sub(1);
        match u32::try_from(last) {
            Ok(last) => u64::from(rng.int_inclusive(0, last)),
            Err(_) => rng.next_u64() % (last + 1),
        }
    }

    fn load_clip(&self, index: u64, out: &mut [f32]) -> Result<[u32; 2]> {
        let choose = |frames, height, width| (self.draw)(index, frames, height, width);
        let (t, s, norm, fps) = (self.t, self.s, &self.norm, self.target_fps);
        self.dataset
            .collate_clip(index as usize, t, s, norm, fps, choose, out)
    }

    /// Records clip `index`'s class, or its multi-hot `targets` over the frames `span`.
    fn record_labels(
        &self,
        index: u64,
        span: [u32; 2],
        labels: &mut Vec<i64>,
        targets: &mut [f32],
    ) -> Result<()> {
        let i = index as usize;
        match self.labels {
            Labels::None => Ok(()),
            Labels::Classes => {
                labels.push(i64::from(self.dataset.label(i)?));
                Ok(())
            }
            Labels::MultiHot { .. } => multi_hot(&self.dataset.labels_in(i, span)?, targets),
        }
    }
}

/// The batch of the clips loaded into `fast` (`loaded` in clip order) at T x S x S (`shape`):
/// packs the slow pathway when `alpha` > 0.
pub fn pack(
    step: u64,
    shape: [u32; 2],
    alpha: u32,
    labels: Labels,
    fast: Vec<f32>,
    loaded: ClipsLoaded,
) -> Result<Batch> {
    let [t, s] = shape;
    let n = loaded.indices.len();
    let slow = if alpha > 0 {
        let ts = collate::slow_indices(t, alpha).len() as u32;
        let mut slow = vec![0f32; batch_len(n, ts, s)];
        collate::pack_slow(&fast, n, t, s, alpha, &mut slow)?;
        Some(slow)
    } else {
        None
    };
    Ok(Batch {
        step,
        num_frames: t,
        crop_size: s,
        indices: loaded.indices,
        labels: loaded.labels,
        targets: matches!(labels, Labels::MultiHot { .. }).then_some(loaded.targets),
        slow,
        fast,
        failures: loaded.failures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collate::ViewMode;
    use crate::data::store::StoreWriter;
    use crate::schedule::{Config, Schedule};

    const CLIPS: u64 = 6;
    /// The clip whose data is corrupt.
    const BAD: u64 = 2;

    /// A store of distinct clips whose clip [`BAD`] fails its checksum, and a plan over it.
    fn store_with_a_bad_clip(name: &str) -> (Dataset, Plan) {
        let dir = std::env::temp_dir().join(format!("mg-assemble-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("train.mgstore");
        let mut w = StoreWriter::create(&path).unwrap();
        for label in 0..CLIPS as u32 {
            let frames: Vec<u8> = (0..8 * 20 * 20 * 3)
                .map(|k| (k as u32 * 7 + label * 31) as u8)
                .collect();
            w.add(&frames, 8, 20, 20, label).unwrap();
        }
        w.finish().unwrap();
        let offset = Dataset::store(&path).map(|d| match d {
            Dataset::Store(s) => s.info(BAD as usize).unwrap().offset,
            _ => unreachable!(),
        });
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[offset.unwrap() as usize + 5] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let dataset = Dataset::store(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = Config::default();
        config.data.num_frames = 8;
        config.data.train_crop_size = 16;
        config.train.batch_size = 2;
        let schedule = Schedule::new(config).unwrap();
        let plan = Plan::new(&schedule, CLIPS, 1, 0, 5).unwrap();
        (dataset, plan)
    }

    fn centre(_: u64, frames: u32, height: u32, width: u32) -> Draw {
        collate::eval_draw(
            crate::collate::FrameRule::Linspace,
            ViewMode::Val,
            frames,
            height,
            width,
            8,
            16,
            1,
            16,
        )
    }

    fn assembly<'a>(dataset: &'a Dataset, plan: &Plan) -> Assembly<'a> {
        Assembly::new(dataset, plan, [8, 16], 4, &centre).labels(Labels::Classes)
    }

    /// Training's policy with `max` replacements, seeded as the tests expect.
    fn replace(max: u32) -> Failures {
        Failures::Replace {
            max,
            seed: 9,
            epoch: 1,
        }
    }

    #[test]
    fn replace_substitutes_a_seeded_clip_and_counts_it() {
        let (dataset, plan) = store_with_a_bad_clip("replace");
        let a = assembly(&dataset, &plan).failures(replace(10), "step 3");
        let b = a.assemble(3, 4, &mut (0..4)).unwrap();
        assert_eq!(b.step, 3);
        assert_eq!(b.failures.len(), 1, "{:?}", b.failures);
        assert!(b.failures[0].starts_with("clip 2: "), "{}", b.failures[0]);
        assert!(
            b.failures[0].contains("clip 2 checksum"),
            "{}",
            b.failures[0]
        );
        let sub = b.indices[BAD as usize];
        assert_ne!(sub, BAD);
        assert_eq!([b.indices[0], b.indices[1], b.indices[3]], [0, 1, 3]);
        assert_eq!(
            b.labels,
            b.indices.iter().map(|&i| i as i64).collect::<Vec<_>>()
        );
        // The substitute is the clip the seeded stream draws, loaded as itself.
        let mut stream = Rng::new(9 ^ 0xFA11, 1, BAD);
        assert_eq!(sub, u64::from(stream.int_inclusive(0, CLIPS as u32 - 1)));
        let alone = a.assemble(3, 1, &mut std::iter::once(sub)).unwrap();
        let one = a.clip_len();
        assert_eq!(&b.fast[2 * one..3 * one], &alone.fast[..]);
        assert_eq!(
            b.slow.as_ref().unwrap().len(),
            4 * collate::batch_len(1, 2, 16)
        );
        // A rerun replaces it the same way.
        assert_eq!(a.assemble(3, 4, &mut (0..4)).unwrap().indices, b.indices);
    }

    #[test]
    fn replace_gives_up_after_max_in_a_row() {
        let (dataset, plan) = store_with_a_bad_clip("replace-max");
        // No replacements allowed: the bad clip's first failure is one past the limit.
        let a = assembly(&dataset, &plan).failures(replace(0), "step 3");
        let e = a.assemble(3, 4, &mut (0..4)).unwrap_err().to_string();
        assert!(
            e.starts_with("step 3: 1 clips in a row failed, last: "),
            "{e}"
        );
        assert!(e.contains("clip 2 checksum"), "{e}");
    }

    #[test]
    fn retry_takes_the_next_candidate_and_gives_up_after_max_in_a_row() {
        let (dataset, plan) = store_with_a_bad_clip("retry");
        let retry = Failures::Retry { max_in_a_row: 3 };
        let a = assembly(&dataset, &plan).failures(retry, "precise BN");
        let b = a
            .assemble(0, 3, &mut [1, BAD, 4, BAD, 5].into_iter())
            .unwrap();
        assert_eq!(b.indices, [1, 4, 5]);
        assert_eq!(b.failures.len(), 2);
        // Four failures in a row are one more than three.
        let e = a
            .assemble(0, 2, &mut [0, BAD, BAD, BAD, BAD, 1].into_iter())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("precise BN: 4 clips in a row failed to load, the last: "),
            "{e}"
        );
        assert!(e.contains("clip 2 checksum"), "{e}");
        // Three are not: the fifth candidate fills the slot.
        let b = a
            .assemble(0, 2, &mut [0, BAD, BAD, BAD, 1].into_iter())
            .unwrap();
        assert_eq!((b.indices, b.failures.len()), (vec![0, 1], 3));
    }

    #[test]
    fn fail_returns_the_clips_own_error() {
        let (dataset, plan) = store_with_a_bad_clip("fail");
        let a = assembly(&dataset, &plan);
        let e = a.assemble(0, 4, &mut (0..4)).unwrap_err();
        assert!(matches!(e, Error::Decode { .. }), "{e:?}");
        assert!(e.to_string().contains("clip 2 checksum"), "{e}");
        let b = a.assemble(0, 2, &mut [3, 4].into_iter()).unwrap();
        assert_eq!((b.indices, b.labels), (vec![3, 4], vec![3, 4]));
        assert!(b.failures.is_empty() && b.targets.is_none());
    }

    #[test]
    fn labels_follow_the_request_and_alpha_zero_has_no_slow_pathway() {
        let (dataset, plan) = store_with_a_bad_clip("labels");
        let none = Assembly::new(&dataset, &plan, [8, 16], 0, &centre);
        let b = none.assemble(0, 2, &mut [0, 1].into_iter()).unwrap();
        assert!(b.labels.is_empty() && b.targets.is_none() && b.slow.is_none());
        let multi = none.labels(Labels::MultiHot { classes: 8 });
        let b = multi.assemble(0, 2, &mut [4, 1].into_iter()).unwrap();
        let mut want = vec![0f32; 16];
        (want[4], want[8 + 1]) = (1.0, 1.0);
        assert_eq!(b.targets, Some(want));
        assert!(b.labels.is_empty());
    }
}
