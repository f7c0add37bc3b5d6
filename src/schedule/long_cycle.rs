//! The long-cycle stage table (spec 1.4): PySlowFast's `get_long_cycle_schedule` and the solver
//! overrides of `init_multigrid`, with the same floating-point order of operations so that
//! every rounding lands where PySlowFast's does.

use super::config::{round_half_even, Config};
use super::Stage;

/// One shape of a long-cycle stage's list: (relative batch, frames, crop). The short-cycle
/// entries keep PySlowFast's unrounded crop (158.39...), which only enters the batch formula.
#[derive(Debug, Clone, Copy)]
struct Shape {
    batch: f64,
    frames: f64,
    crop: f64,
}

/// Builds the multigrid stage list and the solver's (steps, lrs, max_epoch).
///
/// Unlike PySlowFast, long cycle without short cycle works: the fine-tune entry takes the last
/// stage's base shape instead of indexing a third short-cycle entry that does not exist.
pub(super) fn build(config: &Config) -> (Vec<Stage>, Vec<u32>, Vec<f64>, u32) {
    let t0 = f64::from(config.data.num_frames);
    let s0 = f64::from(config.data.train_crop_size);
    let mg = &config.multigrid;
    let steps = &config.solver.steps;
    let default_size = t0 * s0 * s0;

    let mut avg_bs = Vec::with_capacity(mg.long_cycle_factors.len());
    let mut all_shapes = Vec::with_capacity(mg.long_cycle_factors.len());
    for &[t_factor, s_factor] in &mg.long_cycle_factors {
        let base_t = round_half_even(t0 * t_factor);
        let base_s = round_half_even(s0 * s_factor);
        let mut ts = Vec::with_capacity(3);
        if mg.short_cycle {
            ts.push((base_t, s0 * mg.short_cycle_factors[0]));
            ts.push((base_t, s0 * mg.short_cycle_factors[1]));
        }
        ts.push((base_t, base_s));
        let shapes: Vec<Shape> = ts
            .into_iter()
            .map(|(t, s)| Shape {
                batch: round_half_even(default_size / (t * s * s)),
                frames: t,
                crop: s,
            })
            .collect();
        avg_bs.push(mean(shapes.iter().map(|s| s.batch)));
        all_shapes.push(shapes);
    }

    // Python's sum() is a left fold from 0; keep the order.
    let sum_avg: f64 = avg_bs.iter().fold(0.0, |a, b| a + b);
    let mut total_iters = 0.0;
    let mut raw: Vec<(usize, Shape, f64)> = Vec::new();
    for (step_index, w) in steps.windows(2).enumerate() {
        let step_epochs = f64::from(w[1] - w[0]);
        for (i, shapes) in all_shapes.iter().enumerate() {
            let cur_epochs = step_epochs * avg_bs[i] / sum_avg;
            let cur_iters = cur_epochs / avg_bs[i];
            total_iters += cur_iters;
            raw.push((step_index, *last(shapes), cur_epochs));
        }
    }
    let lr_stages = steps.len() - 1;
    let default_iters = f64::from(*steps.last().unwrap_or(&0));
    let final_step_epochs = f64::from(config.solver.max_epoch - steps.last().copied().unwrap_or(0));
    // Validation guarantees at least one LR stage, so total_iters > 0.
    let iter_saving = default_iters / total_iters;
    let avg_last = *last(&avg_bs);
    let ft_epochs = final_step_epochs / iter_saving * avg_last;
    raw.push((lr_stages, *last(last(&all_shapes).as_slice()), ft_epochs));

    let raw_total: f64 = raw.iter().fold(0.0, |a, s| a + s.2);
    let x = f64::from(config.solver.max_epoch) * mg.epoch_factor / raw_total;
    let mut total_epochs = 0.0;
    let stages: Vec<Stage> = raw
        .iter()
        .map(|(k, shape, epochs)| {
            total_epochs += epochs * x;
            Stage {
                lr_stage: *k as u32,
                batch_factor: shape.batch as u32,
                num_frames: shape.frames as u32,
                crop_size: shape.crop as u32,
                end_epoch: round_half_even(total_epochs) as u32,
            }
        })
        .collect();

    // init_multigrid: the fine-tune stage is split at its midpoint; its first half keeps the
    // previous entry's LR, the second half takes the next gamma step.
    let mut solver_steps: Vec<u32> = std::iter::once(0)
        .chain(stages.iter().map(|s| s.end_epoch))
        .collect();
    let n = solver_steps.len();
    solver_steps[n - 1] = (solver_steps[n - 2] + solver_steps[n - 1]) / 2;
    let mut lrs: Vec<f64> = stages
        .iter()
        .map(|s| config.solver.gamma.powf(f64::from(s.lr_stage)) * f64::from(s.batch_factor))
        .collect();
    let ft_lr = lrs.pop().unwrap_or(1.0);
    let before_ft = lrs.last().copied().unwrap_or(ft_lr);
    lrs.push(before_ft);
    lrs.push(ft_lr);
    let max_epoch = stages.last().map_or(0, |s| s.end_epoch);
    (stages, solver_steps, lrs, max_epoch)
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    sum / n as f64
}

fn last<T>(v: &[T]) -> &T {
    // Every list here is built non-empty from validated factors.
    &v[v.len() - 1]
}
