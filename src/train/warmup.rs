//! Warm-up over the shapes the plan still holds.

use tch::{Kind, Tensor};

use super::{amp, Trainer};
use crate::error::Result;
use crate::schedule::CudnnBenchmark;

impl Trainer {
    /// One forward and backward at every shape still ahead in the plan, and one evaluation
    /// forward, so that cuDNN autotuning and allocator growth happen before the first step.
    /// With `run.cudnn_benchmark = "auto"` on CUDA, it also decides per shape whether cuDNN's
    /// search is worth it (`cudnn.rs`).
    /// Parameters, BN statistics and the optimizer state are restored, so training is the same
    /// with or without it.
    pub fn warm_up(&mut self) -> Result<usize> {
        let shapes = self.plan.shapes_from(self.next_step);
        let buffers = self
            .vs
            .variables()
            .into_values()
            .filter(|t| !t.requires_grad())
            .map(|t| {
                let mut saved = t.f_zeros_like()?;
                saved.f_copy_(&t)?;
                Ok((t, saved))
            })
            .collect::<Result<Vec<(Tensor, Tensor)>>>()?;
        if self.device.is_cuda() && self.config.run.cudnn_benchmark == CudnnBenchmark::Auto {
            self.cudnn = Some(self.warm_up_deciding(&shapes)?);
        } else {
            for &shape in &shapes {
                self.warm_step(shape)?;
            }
        }
        let (t, s) = (self.config.data.num_frames, self.config.data.test_crop_size);
        let (slow, fast) = self.random_input(self.config.run.eval_batch_size as u32, t, s)?;
        let _ = tch::no_grad(|| {
            amp::autocast(self.device, self.precision, || {
                self.model.forward(&slow, &fast, 1, false)
            })
        })?;
        self.opt.zero_grad()?;
        tch::no_grad(|| -> Result<()> {
            for (live, saved) in &buffers {
                live.shallow_clone().f_copy_(saved)?;
            }
            Ok(())
        })?;
        self.wait_for_device()?;
        self.warmed_up = true;
        Ok(shapes.len())
    }

    /// Random clips of `n` x `t` frames x `s`^2 pixels on the device: slow and fast pathways
    /// (the slow one empty for a single-pathway network).
    fn random_input(&self, n: u32, t: u32, s: u32) -> Result<(Tensor, Tensor)> {
        let ts = self.slow_frames(t);
        let (n, t, s) = (i64::from(n), i64::from(t), i64::from(s));
        let opts = (Kind::Float, self.device);
        Ok((
            Tensor::f_randn([n, 3, ts, s, s], opts)?,
            Tensor::f_randn([n, 3, t, s, s], opts)?,
        ))
    }

    /// One forward and backward at (batch, frames, crop, BN groups) on random clips; the
    /// gradients it leaves are zeroed before training.
    pub(super) fn warm_step(&mut self, [n, t, s, groups]: [u32; 4]) -> Result<()> {
        let (slow, fast) = self.random_input(n, t, s)?;
        let labels = Tensor::f_zeros([i64::from(n)], (Kind::Int64, self.device))?;
        let loss = self.training_loss(&slow, &fast, &labels, i64::from(groups))?;
        loss.f_backward()?;
        Ok(())
    }
}
