//! Warm-up over the shapes the plan still holds.

use tch::{Device, Kind, Tensor};

use super::{amp, Trainer};
use crate::collate::slow_indices;
use crate::error::Result;

impl Trainer {
    /// One forward and backward at every shape still ahead in the plan, and one evaluation
    /// forward, so that cuDNN autotuning and allocator growth happen before the first step.
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
        let alpha = self.config.model.alpha;
        let input = |n: u32, t: u32, s: u32| {
            let ts = slow_indices(t, alpha).len() as i64;
            let (n, t, s) = (i64::from(n), i64::from(t), i64::from(s));
            let opts = (Kind::Float, self.device);
            (
                Tensor::f_randn([n, 3, ts, s, s], opts),
                Tensor::f_randn([n, 3, t, s, s], opts),
            )
        };
        for &[n, t, s, groups] in &shapes {
            let (slow, fast) = input(n, t, s);
            let (slow, fast) = (slow?, fast?);
            let labels = Tensor::f_zeros([i64::from(n)], (Kind::Int64, self.device))?;
            let loss = self.training_loss(&slow, &fast, &labels, i64::from(groups))?;
            loss.f_backward()?;
        }
        let (t, s) = (self.config.data.num_frames, self.config.data.test_crop_size);
        let (slow, fast) = input(self.config.run.eval_batch_size as u32, t, s);
        let (slow, fast) = (slow?, fast?);
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
        if self.device.is_cuda() {
            // Waits for the warm-up's kernels (all on the current stream) as
            // tch::Cuda::synchronize would, but an asynchronous CUDA error surfacing here comes
            // back as an error, where tch::Cuda::synchronize panics.
            let _ = Tensor::f_zeros([1], (Kind::Float, self.device))?.f_to_device(Device::Cpu)?;
        }
        self.warmed_up = true;
        Ok(shapes.len())
    }
}
