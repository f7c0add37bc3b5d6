//! PySlowFast's precise BN, at the shape the statistics will serve.

use super::Trainer;
use crate::collate::{self, Draw, FrameRule, Rng};
use crate::data::{Assembly, Failures};
use crate::error::{Error, Result};
use crate::schedule::DataConfig;

/// Clips that fail to load in a row before precise BN gives up, as the training collator.
const MAX_FAILED_IN_A_ROW: u32 = 10;

/// The shape an evaluation scores at, and the training-style draws that precise BN takes its
/// batches from for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Serving {
    pub t: u32,
    pub s: u32,
    /// Temporal stride range and short-side jitter of the training-style draws.
    pub rate: [u32; 2],
    pub jitter: [u32; 2],
    /// This rank's clips per precise-BN batch and their BN groups.
    pub batch: usize,
    pub groups: i64,
}

impl Serving {
    /// A training-style draw at this shape (random stride, start, scale, crop and flip) for a
    /// clip of `frames` frames of `height` x `width`, under the dataset's `rule`;
    /// `random_time` false takes SSv2's middle frames (its validation).
    #[allow(clippy::too_many_arguments)]
    pub fn draw(
        &self,
        rng: &mut Rng,
        data: &DataConfig,
        rule: FrameRule,
        random_time: bool,
        frames: u32,
        height: u32,
        width: u32,
    ) -> Draw {
        collate::train_draw(
            rng,
            rule,
            random_time,
            frames,
            height,
            width,
            self.t,
            self.s,
            self.rate,
            self.jitter,
            data.inv_uniform_sample,
            data.random_flip,
        )
    }
}

impl Trainer {
    /// A long-cycle stage's base shape, augmentation and per-rank batch: where PySlowFast's
    /// precise BN and its mid-run validation run.
    pub(super) fn serving_stage(&self, stage: usize) -> Result<Serving> {
        let st = *self.schedule.stages().get(stage).ok_or_else(|| {
            Error::OutOfRange(format!("stage {stage} is past the schedule's stages"))
        })?;
        let world = self.launch.world_size as u32;
        Ok(Serving {
            t: st.num_frames,
            s: st.crop_size,
            rate: self.schedule.sampling_rate_range(stage),
            jitter: self.schedule.jitter_scales(st.crop_size),
            batch: (st.batch_factor * self.config.train.batch_size / world).max(1) as usize,
            groups: i64::from(self.schedule.bn_grouping(stage, world).groups),
        })
    }

    /// The base shape with the test crop (`data.num_frames` x `data.test_crop_size`): where the
    /// final test and the `centre` validation score. Its precise-BN draws keep the training
    /// jitter, raised to the crop where the crop is larger.
    pub(super) fn serving_test(&self) -> Serving {
        let d = &self.config.data;
        let world = self.launch.world_size as u32;
        let [jmin, jmax] = d.train_jitter_scales;
        let s = d.test_crop_size;
        Serving {
            t: d.num_frames,
            s,
            rate: [d.sampling_rate; 2],
            jitter: [jmin.max(s), jmax.max(s)],
            batch: (self.config.train.batch_size / world).max(1) as usize,
            groups: i64::from(
                self.schedule
                    .bn_grouping_of(u64::from(self.config.train.batch_size), world)
                    .groups,
            ),
        }
    }

    /// PySlowFast's precise BN: running statistics recomputed from training batches
    /// (train-split clips, training augmentation) of `at`'s shape, in its BN groups: each
    /// group's population statistics over all the batches, the groups aggregated once at the
    /// end (`aggregate_sub_bn_stats`). Clips are drawn without replacement from a permutation of
    /// the train split (seeded by the step), each rank its own share; the batch count is
    /// capped at what the split holds; a clip that fails to load is replaced by the next (an
    /// error after ten in a row).
    /// Nothing is recomputed when the statistics already serve `at` and no step trained since.
    pub(super) fn precise_bn(&mut self, at: Serving) -> Result<()> {
        let batches = self.config.run.precise_bn_batches;
        if !self.config.run.precise_bn || batches == 0 || self.precise_at == Some(at) {
            return Ok(());
        }
        let (t, s) = (at.t, at.s);
        let world = self.launch.world_size;
        let per_rank = self.train.len() / world;
        if per_rank == 0 {
            return Err(Error::Data(format!(
                "precise BN: the train split's {} clips leave none for each of {world} ranks",
                self.train.len()
            )));
        }
        // A split smaller than one batch gives one batch of what it holds, in as many of the
        // groups as still divide it.
        let (n, groups) = if per_rank >= at.batch {
            (at.batch, at.groups)
        } else if per_rank as i64 >= at.groups {
            (per_rank - per_rank % at.groups as usize, at.groups)
        } else {
            (per_rank, 1)
        };
        let batches = batches.min(per_rank / n);
        let seed = self.config.run.seed ^ 0xB17;
        let order = permutation(self.train.len(), seed, self.next_step);
        // Rank r takes every world-th clip of the permutation from r: disjoint shares.
        // A clip that fails is replaced by the next one, going round the share again if needed.
        let share: Vec<usize> = order
            .into_iter()
            .skip(self.launch.rank)
            .step_by(world)
            .collect();
        let mut pool = share.iter().map(|&i| i as u64).cycle();
        let data = &self.config.data;
        let rule = self.train.frame_rule();
        let step = self.next_step;
        let draw = |index, frames, height, width| {
            let mut rng = Rng::new(seed, step, index);
            at.draw(&mut rng, data, rule, true, frames, height, width)
        };
        let retry = Failures::Retry {
            max_in_a_row: MAX_FAILED_IN_A_ROW,
        };
        let assembly = Assembly::new(
            &self.train,
            &self.plan,
            [t, s],
            self.config.model.collate_alpha(),
            &draw,
        )
        .failures(retry, "precise BN");
        let started = std::time::Instant::now();
        let mut failures = 0usize;
        let bn = self.model.batch_norms();
        bn.iter().for_each(|b| b.start_precise());
        let run = (|| -> Result<()> {
            for _ in 0..batches {
                let batch = assembly.assemble(step, n, &mut pool)?;
                failures += batch.failures.len();
                let (slow, fast) = self.inputs(&batch)?;
                let _ = tch::no_grad(|| self.model.forward(&slow, &fast, groups, true))?;
            }
            Ok(())
        })();
        // Finished on failure too, so no BN is left accumulating.
        let finished = bn.iter().try_for_each(|b| b.finish_precise());
        run?;
        finished?;
        self.precise_at = Some(at);
        let seconds = started.elapsed().as_secs_f64();
        self.precise_seconds += seconds;
        self.write_metrics(serde_json::json!({
            "type": "precise_bn", "step": self.next_step, "shape": [n, t, s], "bn_groups": groups,
            "batches": batches, "failed_clips": failures,
            "seconds": seconds, "wall_s": self.wall_seconds(),
        }))?;
        Ok(())
    }
}

/// A seeded Fisher-Yates permutation of 0..len.
fn permutation(len: usize, seed: u64, salt: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed, salt, u64::MAX);
    let mut v: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        let j = (((rng.next_u64() as u128) * (i as u128 + 1)) >> 64) as usize;
        v.swap(i, j);
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn permutation_is_a_permutation_and_seeded() {
        let p = super::permutation(1000, 7, 3);
        let mut sorted = p.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_ne!(p, (0..1000).collect::<Vec<_>>());
        assert_eq!(p, super::permutation(1000, 7, 3));
        assert_ne!(p, super::permutation(1000, 7, 4));
    }
}
