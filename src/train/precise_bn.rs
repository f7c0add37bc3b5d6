//! PySlowFast's precise BN.

use super::Trainer;
use crate::collate::{self, batch_len, slow_indices, Rng};
use crate::error::Result;

impl Trainer {
    /// PySlowFast's precise BN: running statistics recomputed as the average over training
    /// batches at the current stage's base shape.
    pub(super) fn precise_bn(&mut self) -> Result<()> {
        let batches = self.config.run.precise_bn_batches;
        if !self.config.run.precise_bn || batches == 0 {
            return Ok(());
        }
        let step = self.plan.step(self.next_step.saturating_sub(1))?;
        let stage = self.schedule.stages()[step.stage as usize];
        let (t, s) = (stage.num_frames, stage.crop_size);
        // train.batch_size is global: each rank takes its share, and the statistics are pooled
        // over ranks afterwards.
        let world = self.launch.world_size as u32;
        let n = (stage.batch_factor * self.config.train.batch_size / world) as usize;
        let bn = self.model.batch_norms();
        bn.iter().for_each(|b| b.reset_running_stats());
        let data = &self.config.data;
        let norm = collate::normalize_of(&self.plan);
        let [jmin, jmax] = self.schedule.jitter_scales(s);
        let rate = self.schedule.sampling_rate_range(step.stage as usize);
        // Each rank draws its own clips; rank 0 draws what a single process would.
        let mut pick = Rng::new(
            self.config.run.seed ^ 0xB17,
            u64::from(step.epoch),
            self.launch.rank as u64,
        );
        let one = batch_len(1, t, s);
        let groups = i64::from(self.schedule.bn_grouping(step.stage as usize, world).groups);
        for i in 0..batches {
            let mut fast = vec![0f32; n * one];
            for k in 0..n {
                let index = pick.int_inclusive(0, (self.train.len() - 1) as u32) as usize;
                let mut rng = Rng::new(self.config.run.seed ^ 0xB17, i as u64, index as u64);
                let choose = |f, h, w| {
                    collate::train_params(
                        &mut rng,
                        f,
                        h,
                        w,
                        t,
                        s,
                        rate,
                        [jmin, jmax],
                        data.inv_uniform_sample,
                        data.random_flip,
                    )
                };
                // A clip that fails to decode is left out of the average (zeros).
                let _ = self.train.collate_clip(
                    index,
                    t,
                    s,
                    &norm,
                    choose,
                    &mut fast[k * one..(k + 1) * one],
                );
            }
            let ts = slow_indices(t, self.config.model.alpha).len();
            let mut slow = vec![0f32; batch_len(n, ts as u32, s)];
            collate::pack_slow(&fast, n, t, s, self.config.model.alpha, &mut slow)?;
            let (slow, fast) = self.inputs(&slow, &fast, n as i64, i64::from(t), i64::from(s))?;
            bn.iter()
                .for_each(|b| b.set_momentum(1.0 / (i as f64 + 1.0)));
            let _ = tch::no_grad(|| self.model.forward(&slow, &fast, groups, true))?;
        }
        bn.iter()
            .for_each(|b| b.set_momentum(crate::model::bn::MOMENTUM));
        Ok(())
    }
}
