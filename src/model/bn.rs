//! BatchNorm whose statistics groups are an argument of the forward pass (spec 1.10).
//!
//! In training, a batch of n clips is normalised in `groups` groups of n / groups clips, as
//! PySlowFast's SubBatchNorm3d does: the (n, c, ...) input is viewed as (n / k, c * k, ...), so
//! group g holds the clips whose index is g mod k. Running statistics are plain per-channel
//! buffers, updated with the pooled mean and variance of the groups (mu = mean_g mu_g,
//! var = mean_g var_g + mean_g (mu_g - mu)^2), so any group count can follow any other and a
//! checkpoint does not depend on it. Evaluation is plain BatchNorm with those buffers. Precise
//! BN instead takes each group's population statistics over all its batches and aggregates the
//! groups once, as PySlowFast's precise BN (fvcore) followed by `aggregate_sub_bn_stats`.

use tch::{nn, Kind, Tensor};

use super::scalar;
use crate::error::{Error, Result};

/// How a training forward pass normalises: in `groups` groups of this process's batch, or
/// (sync BN, `sync` set, one group) over the whole batch of a group of ranks.
#[derive(Clone, Copy)]
pub struct Bn<'a> {
    pub groups: i64,
    pub sync: Option<&'a dyn SyncStats>,
}

impl Bn<'_> {
    pub fn groups(groups: i64) -> Bn<'static> {
        Bn { groups, sync: None }
    }
}

/// Sums over the ranks that share BN statistics, with a gradient summed over them too (the
/// trainer's collective provides it; the model knows nothing of processes).
pub trait SyncStats {
    /// Ranks in the group.
    fn ranks(&self) -> usize;
    /// The mean over the group's ranks of `x`, differentiable.
    fn all_reduce_mean(&self, x: &Tensor) -> Result<Tensor>;
}

pub const EPS: f64 = 1e-5;
pub const MOMENTUM: f64 = 0.1;

#[derive(Debug)]
pub struct GroupBatchNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    /// While precise BN runs: per-group sums of batch statistics, aggregated once at the end.
    precise: std::cell::RefCell<Option<PreciseSums>>,
}

/// Sums over precise-BN batches of each group's mean and mean square (biased variance plus
/// the squared mean), [groups, c], in f64: their difference cancels badly in f32.
#[derive(Debug)]
struct PreciseSums {
    mean: Tensor,
    square: Tensor,
    batches: i64,
}

impl GroupBatchNorm {
    /// Parameters `weight`, `bias` and buffers `running_mean`, `running_var` under `p`, as
    /// PyTorch names them. `zero_gamma` starts the scale at 0 (a residual block's last BN).
    pub fn new(p: &nn::Path, channels: i64, zero_gamma: bool) -> Result<GroupBatchNorm> {
        let gamma = if zero_gamma {
            nn::Init::Const(0.0)
        } else {
            nn::Init::Const(1.0)
        };
        Ok(GroupBatchNorm {
            weight: p.f_var("weight", &[channels], gamma)?,
            bias: p.f_var("bias", &[channels], nn::Init::Const(0.0))?,
            running_mean: p.f_zeros_no_train("running_mean", &[channels])?,
            running_var: p.f_ones_no_train("running_var", &[channels])?,
            precise: std::cell::RefCell::new(None),
        })
    }

    /// Starts precise BN: training passes from here on leave the running statistics alone and
    /// sum each group's batch mean and unbiased variance instead.
    pub fn start_precise(&self) {
        *self.precise.borrow_mut() = Some(PreciseSums {
            mean: Tensor::new(),
            square: Tensor::new(),
            batches: 0,
        });
    }

    /// Ends precise BN as PySlowFast's `calculate_and_update_precise_bn` (fvcore's
    /// `update_bn_stats` with its population-variance estimator) over SubBatchNorm3d's splits,
    /// then `aggregate_sub_bn_stats`: each group g gets the mean mu_g and the biased variance
    /// var_g of all its values over the batches (every batch the same size), and the running
    /// statistics become mean = mean_g mu_g and var = mean_g var_g + mean_g (mu_g - mean)^2.
    /// Without a batch the statistics stay as they were.
    pub fn finish_precise(&self) -> Result<()> {
        let Some(sums) = self.precise.borrow_mut().take() else {
            return Ok(());
        };
        if sums.batches == 0 {
            return Ok(());
        }
        tch::no_grad(|| -> Result<()> {
            let n = scalar(sums.batches as f64)?;
            let mean_g = sums.mean.f_div(&n)?;
            let var_g = sums.square.f_div(&n)?.f_sub(&mean_g.f_square()?)?;
            let mu = mean_g.f_mean_dim(0, false, Kind::Double)?;
            let spread = mean_g.f_sub(&mu.f_unsqueeze(0)?)?.f_square()?.f_mean_dim(
                0,
                false,
                Kind::Double,
            )?;
            let var = var_g.f_mean_dim(0, false, Kind::Double)?.f_add(&spread)?;
            self.running_mean.shallow_clone().f_copy_(&mu)?;
            self.running_var.shallow_clone().f_copy_(&var)?;
            Ok(())
        })
    }

    /// Running statistics back to their initial values (mean 0, variance 1).
    pub fn reset_running_stats(&self) -> Result<()> {
        tch::no_grad(|| {
            let _ = self.running_mean.shallow_clone().f_zero_()?;
            let _ = self
                .running_var
                .shallow_clone()
                .f_fill_tensor_(&scalar(1.0)?)?;
            Ok(())
        })
    }

    /// running = (1 - momentum) running + momentum batch, for the mean and the variance, as
    /// torch.nn.BatchNorm updates them. Call under `no_grad`.
    fn update_running(&self, mean: &Tensor, var: &Tensor) -> Result<()> {
        let (keep, take) = (scalar(1.0 - MOMENTUM)?, scalar(MOMENTUM)?);
        for (running, batch) in [(&self.running_mean, mean), (&self.running_var, var)] {
            let _ = running
                .shallow_clone()
                .f_mul_(&keep)?
                .f_add_(&batch.f_mul(&take)?)?;
        }
        Ok(())
    }

    /// Errors: a group count that does not divide the batch (in training), libtorch's.
    pub fn forward(&self, x: &Tensor, bn: Bn, train: bool) -> Result<Tensor> {
        if train {
            if let Some(sync) = bn.sync {
                return self.forward_sync(x, sync);
            }
        }
        let groups = bn.groups;
        if !train {
            return Ok(x.f_batch_norm(
                Some(&self.weight),
                Some(&self.bias),
                Some(&self.running_mean),
                Some(&self.running_var),
                false,
                MOMENTUM,
                EPS,
                true,
            )?);
        }
        let size = x.size();
        if size.len() < 2 {
            return Err(Error::InvalidArgument(format!(
                "BatchNorm input {size:?} has no channel dimension"
            )));
        }
        let (n, c) = (size[0], size[1]);
        // PySlowFast's SubBatchNorm3d cannot split unevenly either; a silent fallback to one
        // group would change the statistics without a word.
        if groups < 1 || n % groups != 0 {
            return Err(Error::InvalidArgument(format!(
                "bn_groups {groups} must divide the batch of {n} clips"
            )));
        }
        let k = groups;
        let precise = self.precise.borrow().is_some();
        if k == 1 && !precise {
            // One group is plain BatchNorm: libtorch's fused kernel, running statistics included
            // (the pooled formula reduces to its unbiased update).
            return Ok(x.f_batch_norm(
                Some(&self.weight),
                Some(&self.bias),
                Some(&self.running_mean),
                Some(&self.running_var),
                true,
                MOMENTUM,
                EPS,
                true,
            )?);
        }
        let mut grouped = size.clone();
        grouped[0] = n / k;
        grouped[1] = c * k;
        // A view for the default layout; a copy for channels-last-3d input, whose channels
        // cannot merge with the batch in place.
        let xg = x.f_reshape(grouped.as_slice())?;
        // The affine is shared by the groups: repeat it over the c * k grouped channels so the
        // kernel applies it in the same pass.
        let (y, mean, invstd) = Tensor::f_native_batch_norm(
            &xg,
            Some(self.weight.f_repeat([k])?),
            Some(self.bias.f_repeat([k])?),
            None::<Tensor>,
            None::<Tensor>,
            true,
            MOMENTUM,
            EPS,
        )?;
        tch::no_grad(|| -> Result<()> {
            let m = (xg.numel() as i64 / (c * k)) as f64;
            if let Some(sums) = self.precise.borrow_mut().as_mut() {
                let mean = mean.f_to_kind(Kind::Double)?.f_view([k, c])?;
                let biased = biased_var(&invstd.f_to_kind(Kind::Double)?)?;
                let square = biased.f_view([k, c])?.f_add(&mean.f_square()?)?;
                if sums.batches == 0 {
                    sums.mean = mean;
                    sums.square = square;
                } else if sums.mean.size() != [k, c] {
                    return Err(Error::InvalidArgument(format!(
                        "precise BN batches changed from {} to {k} BN groups",
                        sums.mean.size()[0]
                    )));
                } else {
                    sums.mean = sums.mean.f_add(&mean)?;
                    sums.square = sums.square.f_add(&square)?;
                }
                sums.batches += 1;
                return Ok(());
            }
            let mean = mean.f_to_kind(Kind::Float)?.f_view([k, c])?;
            // Running stats take the unbiased variance, as torch.nn.BatchNorm does.
            let var = biased_var(&invstd.f_to_kind(Kind::Float)?)?
                .f_mul(&scalar(m / (m - 1.0).max(1.0))?)?
                .f_view([k, c])?;
            let mu = mean.f_mean_dim(0, false, Kind::Float)?;
            let spread =
                mean.f_sub(&mu.f_unsqueeze(0)?)?
                    .f_square()?
                    .f_mean_dim(0, false, Kind::Float)?;
            let pooled = var.f_mean_dim(0, false, Kind::Float)?.f_add(&spread)?;
            self.update_running(&mu, &pooled)
        })?;
        Ok(y.f_reshape(size.as_slice())?)
    }

    /// Sync BN (pytorchvideo's NaiveSyncBatchNorm3d, PySlowFast's choice when a rank's batch is
    /// below `bn_base_size`): per-channel mean and mean square of this rank's batch, averaged
    /// over the group (equal batches on every rank), normalise every rank's clips. The running
    /// variance takes the unbiased estimate over all the group's values, as torch.nn.BatchNorm.
    fn forward_sync(&self, x: &Tensor, sync: &dyn SyncStats) -> Result<Tensor> {
        let size = x.size();
        if size.len() < 2 {
            return Err(Error::InvalidArgument(format!(
                "BatchNorm input {size:?} has no channel dimension"
            )));
        }
        let c = size[1];
        let dims: Vec<i64> = (0..size.len() as i64).filter(|&d| d != 1).collect();
        let xf = x.f_to_kind(Kind::Float)?;
        let mean = xf.f_mean_dim(dims.as_slice(), false, Kind::Float)?;
        let meansqr = xf
            .f_mul(&xf)?
            .f_mean_dim(dims.as_slice(), false, Kind::Float)?;
        let both = sync.all_reduce_mean(&Tensor::f_cat(&[mean, meansqr], 0)?)?;
        let mean = both.f_narrow(0, 0, c)?;
        let var = both.f_narrow(0, c, c)?.f_sub(&mean.f_square()?)?;
        tch::no_grad(|| {
            let m = (xf.numel() as i64 / c) as f64 * sync.ranks() as f64;
            let unbiased = var.f_detach()?.f_mul(&scalar(m / (m - 1.0).max(1.0))?)?;
            self.update_running(&mean.f_detach()?, &unbiased)
        })?;
        let scale = self.weight.f_mul(&var.f_add(&scalar(EPS)?)?.f_rsqrt()?)?;
        let shift = self.bias.f_sub(&mean.f_mul(&scale)?)?;
        let mut shape = vec![1i64; size.len()];
        shape[1] = c;
        let y = xf
            .f_mul(&scale.f_view(shape.as_slice())?)?
            .f_add(&shift.f_view(shape.as_slice())?)?;
        Ok(y.f_to_kind(x.kind())?)
    }
}

/// The biased variance from native_batch_norm's 1 / sqrt(biased var + eps): 1 / invstd^2 - eps
/// (what `pow(-2)` computes, without its panicking scalar).
fn biased_var(invstd: &Tensor) -> Result<Tensor> {
    Ok(invstd.f_square()?.f_reciprocal()?.f_sub(&scalar(EPS)?)?)
}
