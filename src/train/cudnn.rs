//! `run.cudnn_benchmark = "auto"`: autotune a shape's convolutions only where it repays itself.
//!
//! cuDNN's search (cudnn.benchmark) costs seconds per shape, once; what it saves is a fraction
//! of every later step at that shape. A multigrid run holds a few shapes for thousands of
//! steps and others for a few dozen, so the answer differs per shape. Warm-up measures every
//! shape's step with cuDNN's heuristics, then searches the shape that takes the most time in
//! all (its steps times its step time) and measures what the search cost and what it saved
//! there. Each other shape is predicted from that one, scaled by its own heuristic step time
//! (the search runs the same convolutions at another size), and is searched at warm-up where
//! the plan's steps at it win the cost back; the others keep the heuristics. Evaluation and
//! precise BN run with the heuristics.

use std::collections::HashMap;
use std::time::Instant;

use tch::{Device, Kind, Tensor};

use super::Trainer;
use crate::error::Result;

/// A shape's steps ahead in the plan and its step time with cuDNN's heuristics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShapeCost {
    pub steps: u64,
    pub heuristic_s: f64,
}

/// What the search did at the probed shape (`index` into the shapes): its first step with
/// cudnn.benchmark on (the search included) and the next one (tuned).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    pub index: usize,
    pub first_s: f64,
    pub tuned_s: f64,
}

/// The shape to probe: the one that takes the most time in all with the heuristics.
pub fn probe_index(shapes: &[ShapeCost]) -> Option<usize> {
    (0..shapes.len()).max_by(|&a, &b| {
        let total = |i: usize| shapes[i].steps as f64 * shapes[i].heuristic_s;
        total(a).total_cmp(&total(b))
    })
}

/// Per shape, whether to search: where the predicted saving over the shape's steps exceeds
/// the predicted search cost. The probed shape keeps its search when it made the step faster.
pub fn decide(shapes: &[ShapeCost], probe: &Probe) -> Vec<bool> {
    let base = shapes[probe.index];
    if base.heuristic_s <= 0.0 || probe.tuned_s >= base.heuristic_s {
        // No saving where it was measured: predict none elsewhere.
        return vec![false; shapes.len()];
    }
    let search = (probe.first_s - probe.tuned_s).max(0.0);
    let saved_fraction = (base.heuristic_s - probe.tuned_s) / base.heuristic_s;
    shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if i == probe.index {
                return true;
            }
            let scale = s.heuristic_s / base.heuristic_s;
            saved_fraction * s.heuristic_s * s.steps as f64 > search * scale
        })
        .collect()
}

/// The decisions for a run: per (batch, frames, crop, BN groups), whether cudnn.benchmark is on
/// for its steps.
#[derive(Debug, Clone, Default)]
pub struct CudnnPlan {
    pub by_shape: HashMap<[u32; 4], bool>,
    pub costs: Vec<([u32; 4], ShapeCost)>,
    pub probe: Option<Probe>,
}

impl CudnnPlan {
    /// Sets cudnn.benchmark for a step at `shape` (off for shapes the plan did not measure).
    pub fn enter(&self, shape: [u32; 4]) {
        tch::Cuda::cudnn_set_benchmark(self.by_shape.get(&shape).copied().unwrap_or(false));
    }

    /// Back to the heuristics, for evaluation and precise BN.
    pub fn leave(&self) {
        tch::Cuda::cudnn_set_benchmark(false);
    }
}

impl Trainer {
    /// How many steps from the run's position the plan holds at each (batch, frames, crop,
    /// BN groups).
    fn steps_per_shape(&self) -> HashMap<[u32; 4], u64> {
        let mut counts = HashMap::new();
        for k in self.next_step..self.plan.total_steps() {
            if let Ok(s) = self.plan.step(k) {
                *counts
                    .entry([s.batch_size, s.num_frames, s.crop_size, s.bn_groups])
                    .or_insert(0) += 1;
            }
        }
        counts
    }

    /// Waits for the device's queued work; an asynchronous CUDA error comes back as an error
    /// (tch::Cuda::synchronize would panic).
    pub(super) fn wait_for_device(&self) -> Result<()> {
        if self.device.is_cuda() {
            let _ = Tensor::f_zeros([1], (Kind::Float, self.device))?.f_to_device(Device::Cpu)?;
        }
        Ok(())
    }

    fn timed_warm_step(&mut self, shape: [u32; 4]) -> Result<f64> {
        self.wait_for_device()?;
        let t0 = Instant::now();
        self.warm_step(shape)?;
        self.wait_for_device()?;
        Ok(t0.elapsed().as_secs_f64())
    }

    /// Warm-up under `"auto"`: measures, decides and searches (see the module's text).
    pub(super) fn warm_up_deciding(&mut self, shapes: &[[u32; 4]]) -> Result<CudnnPlan> {
        let counts = self.steps_per_shape();
        tch::Cuda::cudnn_set_benchmark(false);
        let mut costs = Vec::with_capacity(shapes.len());
        for &shape in shapes {
            // The first call pays the allocator's growth and lazy initialisation.
            self.warm_step(shape)?;
            let heuristic_s = self.timed_warm_step(shape)?;
            let steps = counts.get(&shape).copied().unwrap_or(0);
            costs.push(ShapeCost { steps, heuristic_s });
        }
        let mut plan = CudnnPlan::default();
        if let Some(index) = probe_index(&costs) {
            tch::Cuda::cudnn_set_benchmark(true);
            let first_s = self.timed_warm_step(shapes[index])?;
            let tuned_s = self.timed_warm_step(shapes[index])?;
            let probe = Probe {
                index,
                first_s,
                tuned_s,
            };
            let decisions = decide(&costs, &probe);
            for (i, (&shape, &search)) in shapes.iter().zip(&decisions).enumerate() {
                if search && i != index {
                    self.warm_step(shape)?;
                }
                plan.by_shape.insert(shape, search);
            }
            plan.probe = Some(probe);
            tch::Cuda::cudnn_set_benchmark(false);
        }
        plan.costs = shapes.iter().copied().zip(costs).collect();
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(steps: u64, heuristic_s: f64) -> ShapeCost {
        ShapeCost { steps, heuristic_s }
    }

    #[test]
    fn a_shape_of_many_steps_is_searched_and_one_of_few_is_not() {
        // The demo's situation: a 4 s search that saves 20% of a 50 ms step repays itself
        // after 400 steps at that size.
        let shapes = [
            cost(2000, 0.05),
            cost(30, 0.05),
            cost(600, 0.025),
            cost(100, 0.1),
        ];
        assert_eq!(probe_index(&shapes), Some(0));
        let probe = Probe {
            index: 0,
            first_s: 4.04,
            tuned_s: 0.04,
        };
        // Shape 2: saves 0.2 * 0.025 * 600 = 3 s against a 2 s search: yes. Shape 3: 2 s
        // saved against 8 s: no.
        assert_eq!(decide(&shapes, &probe), vec![true, false, true, false]);
    }

    #[test]
    fn no_saving_at_the_probe_searches_nothing() {
        let shapes = [cost(5000, 0.05), cost(5000, 0.05)];
        let probe = Probe {
            index: 0,
            first_s: 3.0,
            tuned_s: 0.05,
        };
        assert_eq!(decide(&shapes, &probe), vec![false, false]);
        let slower = Probe {
            tuned_s: 0.06,
            ..probe
        };
        assert_eq!(decide(&shapes, &slower), vec![false, false]);
    }

    #[test]
    fn a_free_search_is_always_worth_it_where_it_saves() {
        let shapes = [cost(10, 0.05), cost(1, 0.01)];
        let probe = Probe {
            index: 0,
            first_s: 0.04,
            tuned_s: 0.04,
        };
        assert_eq!(decide(&shapes, &probe), vec![true, true]);
        assert_eq!(probe_index(&[]), None);
    }
}
