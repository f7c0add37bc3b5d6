//! Staging: host batches onto the device (pinned memory and non-blocking copies on CUDA).

use tch::{Device, Tensor};

use super::Trainer;
use crate::collate::slow_indices;
use crate::data::{Batch, Loader};
use crate::error::{Error, Result};

impl Trainer {
    /// A batch's pathways on the device, whoever assembled it (training, precise BN,
    /// evaluation): slow [N, 3, T/alpha, S, S] and fast [N, 3, T, S, S]; a single-pathway
    /// network's slow input is empty, [N, 3, 0, S, S].
    pub(super) fn inputs(&self, batch: &Batch) -> Result<(Tensor, Tensor)> {
        let n = batch.len() as i64;
        let (t, s) = (i64::from(batch.num_frames), i64::from(batch.crop_size));
        let ts = self.slow_frames(batch.num_frames);
        Ok((
            self.upload(batch.slow.as_deref().unwrap_or(&[]), &[n, 3, ts, s, s])?,
            self.upload(&batch.fast, &[n, 3, t, s, s])?,
        ))
    }

    /// Frames of the slow pathway at `t` frames: T / alpha for SlowFast, 0 for a network
    /// that takes one pathway (collation packs none for it).
    pub(super) fn slow_frames(&self, t: u32) -> i64 {
        match self.config.model.collate_alpha() {
            0 => 0,
            alpha => slow_indices(t, alpha).len() as i64,
        }
    }

    /// A host buffer on the device. On CUDA it goes through pinned memory with a non-blocking
    /// copy, so the transfer overlaps the kernels already queued.
    pub(super) fn upload<T: tch::kind::Element>(
        &self,
        host: &[T],
        shape: &[i64],
    ) -> Result<Tensor> {
        if !self.device.is_cuda() {
            return Ok(Tensor::f_from_slice(host)?.f_view(shape)?);
        }
        let numel: i64 = shape.iter().product();
        if numel == 0 && host.is_empty() {
            // A single-pathway network's slow input: nothing to pin or copy.
            return Ok(Tensor::f_empty(shape, (T::KIND, self.device))?);
        }
        if numel != host.len() as i64 {
            return Err(Error::InvalidArgument(format!(
                "{} values for shape {shape:?}",
                host.len()
            )));
        }
        // Straight into pinned memory: one host copy, not a pageable tensor and then a pin.
        let pinned = Tensor::f_empty(shape, (T::KIND, Device::Cpu))?.f_pin_memory(self.device)?;
        // SAFETY: `pinned` is a fresh contiguous CPU tensor of numel elements of kind T, and
        // `host` holds exactly numel values (checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(host.as_ptr(), pinned.data_ptr().cast::<T>(), host.len())
        };
        Ok(pinned.f_to_device_(self.device, T::KIND, true, false)?)
    }

    /// The loader's next batch, on its way to the device; None at the end of the plan.
    pub(super) fn next_staged(&self, loader: &mut Loader) -> Result<Option<Staged>> {
        loader
            .next_batch()
            .map(|b| b.and_then(|b| self.stage(b)))
            .transpose()
    }

    pub(super) fn stage(&self, batch: Batch) -> Result<Staged> {
        let n = batch.len() as i64;
        let (slow, fast) = self.inputs(&batch)?;
        // Class indices [N], or a multi-label task's targets [N, classes].
        let labels = match &batch.targets {
            Some(targets) => {
                let classes = i64::from(self.config.model.num_classes);
                self.upload(targets, &[n, classes])?
            }
            None => self.upload(&batch.labels, &[n])?,
        };
        Ok(Staged {
            batch,
            slow,
            fast,
            labels,
        })
    }
}

/// A training batch on the device, its host-to-device copy possibly still in flight.
pub(super) struct Staged {
    pub batch: Batch,
    pub slow: Tensor,
    pub fast: Tensor,
    pub labels: Tensor,
}
