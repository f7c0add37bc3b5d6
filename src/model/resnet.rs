//! PySlowFast's single-pathway ResNet (MODEL_NAME ResNet): `model.arch` c2d, i3d or slow, with
//! optional non-local blocks (I3D-NL, Slow-NL). Built from SlowFast's stem, residual blocks,
//! grouped BN and classifier, under PySlowFast's names: `s1.pathway0_stem.conv.weight`,
//! `s3.pathway0_res1.branch2.a.weight`, `s3.pathway0_nonlocal1.conv_theta.bias`,
//! `head.projection.weight`, ...
//!
//! Per arch, as PySlowFast's tables: the temporal kernel of the stem and the per-stage pattern
//! of the blocks' first convolution (`_TEMPORAL_KERNEL_BASIS`, cycled over a stage's blocks:
//! RESNET.NUM_BLOCK_TEMP_KERNEL is every block, as in PySlowFast's R50 and R101 configs), and
//! the max pool after res2 (`_POOL1`: [2, 1, 1] halves T for c2d and i3d). Spatial strides are
//! [1, 2, 2, 2] for res2..res5 (RESNET.SPATIAL_STRIDES) and no dilation.

use tch::{nn, Tensor};

use super::bn::{Bn, GroupBatchNorm};
use super::nonlocal::Nonlocal;
use super::{
    channels_last_3d, set_conv_layout, stage_convs, Conv3d, HeadAct, HeadPool, Linear, ResBlock,
    Stem,
};
use crate::error::{Error, Result};
use crate::schedule::{Arch, ModelConfig};

/// An arch's stem temporal kernel, its res2..res5 temporal kernel patterns and its pool after
/// res2.
type ArchTable = (i64, [&'static [i64]; 4], [i64; 3]);

/// `_TEMPORAL_KERNEL_BASIS[arch]` (stem, then res2..res5 patterns) and `_POOL1[arch]`.
fn arch_table(arch: Arch) -> Option<ArchTable> {
    match arch {
        Arch::C2d => Some((1, [&[1], &[1], &[1], &[1]], [2, 1, 1])),
        Arch::I3d => Some((5, [&[3], &[3, 1], &[3, 1], &[1, 3]], [2, 1, 1])),
        Arch::Slow => Some((1, [&[1], &[1], &[3], &[3]], [1, 1, 1])),
        Arch::SlowFast => None,
    }
}

/// A stage's residual blocks, each optionally followed by a non-local block.
pub(super) type Stage = Vec<(ResBlock, Option<Nonlocal>)>;

#[derive(Debug)]
pub struct ResNet {
    stem: Stem,
    /// res2..res5.
    stages: Vec<Stage>,
    /// Max pool (kernel = stride) after res2.
    pool1: [i64; 3],
    projection: Linear,
    dropout: f64,
    channels_last: bool,
}

impl ResNet {
    /// The network for `c` (`c.arch` c2d, i3d or slow), its parameters under `root`. Errors:
    /// another arch, libtorch's.
    pub fn new(root: &nn::Path, c: &ModelConfig) -> Result<ResNet> {
        let Some((stem_kt, kernels, pool1)) = arch_table(c.arch) else {
            return Err(Error::InvalidArgument(format!(
                "model.arch {} is not a single-pathway ResNet",
                c.arch
            )));
        };
        let w = i64::from(c.width_per_group);
        let bottleneck = c.depth != 18;
        let s1 = root / "s1" / "pathway0_stem";
        let stem = Stem {
            conv: Conv3d::new(
                &(&s1 / "conv"),
                3,
                w,
                [stem_kt, 7, 7],
                [1, 2, 2],
                [stem_kt / 2, 3, 3],
            )?,
            bn: GroupBatchNorm::new(&(&s1 / "bn"), w, false)?,
        };
        let mut cin = w;
        let mut stages = Vec::with_capacity(4);
        for (i, &n) in c.stage_blocks().iter().enumerate() {
            let out = w * 4 * (1 << i);
            let inner = w * (1 << i);
            let stride = if i == 0 { 1 } else { 2 };
            let p = root / format!("s{}", i + 2);
            let blocks = (0..n)
                .map(|b| -> Result<_> {
                    let block = ResBlock::new(
                        &(&p / format!("pathway0_res{b}")),
                        if b == 0 { cin } else { out },
                        out,
                        inner,
                        kernels[i][b as usize % kernels[i].len()],
                        if b == 0 { stride } else { 1 },
                        bottleneck,
                        c.zero_init_final_bn,
                    )?;
                    Ok((block, Nonlocal::after_block(&p, c, i, 0, b, out)?))
                })
                .collect::<Result<Stage>>()?;
            stages.push(blocks);
            cin = out;
        }
        let projection = Linear::new(
            &(root / "head" / "projection"),
            w * 32,
            i64::from(c.num_classes),
        )?;
        Ok(ResNet {
            stem,
            stages,
            pool1,
            projection,
            dropout: c.dropout_rate,
            channels_last: false,
        })
    }

    /// The fixed head pool for training clips of `num_frames` x `crop`^2: the last feature
    /// maps, [T / pool1_t, ceil(crop / 32), ceil(crop / 32)] (as [`super::SlowFast`]'s; equal
    /// to PySlowFast's crop // 32 at its crops, multiples of 32), for [`ResNet::eval_probs`].
    pub fn head_pool_fixed(&self, num_frames: i64, crop: i64) -> HeadPool {
        let m = (crop + 31) / 32;
        let k = [num_frames / self.pool1[0], m, m];
        HeadPool::Fixed([k, k])
    }

    /// As [`super::SlowFast::set_channels_last`].
    pub fn set_channels_last(&mut self, on: bool) -> Result<()> {
        let convs = std::iter::once(&mut self.stem.conv).chain(stage_convs(self.stages.iter_mut()));
        set_conv_layout(convs, on)?;
        self.channels_last = on;
        Ok(())
    }

    /// Whether [`ResNet::set_channels_last`] is on.
    pub fn channels_last(&self) -> bool {
        self.channels_last
    }

    /// Multiply-adds of one clip's forward pass at `frames` x `crop`^2, as
    /// [`super::SlowFast::macs`], non-local blocks included.
    pub fn macs(&self, frames: i64, crop: i64) -> f64 {
        let (mut d, mut total) = self.stem.conv.macs([frames, crop, crop]);
        d = [d[0], (d[1] - 1) / 2 + 1, (d[2] - 1) / 2 + 1];
        for (i, stage) in self.stages.iter().enumerate() {
            if i == 1 {
                d = std::array::from_fn(|j| d[j] / self.pool1[j]);
            }
            for (block, nonlocal) in stage {
                let (out, m) = block.macs(d);
                d = out;
                total += m + nonlocal.as_ref().map_or(0.0, |n| n.macs(d));
            }
        }
        total + self.projection.weight.numel() as f64
    }

    /// Every BatchNorm of the network (non-local blocks' included), for precise BN.
    pub fn batch_norms(&self) -> Vec<&GroupBatchNorm> {
        let mut v = vec![&self.stem.bn];
        for (block, nonlocal) in self.stages.iter().flatten() {
            v.extend(block.branch1.iter().map(|b| &b.1));
            v.extend(block.convs.iter().map(|c| &c.1));
            v.extend(nonlocal.iter().map(|n| &n.bn));
        }
        v
    }

    /// Logits [N, classes] for clips [N, 3, T, H, W]; `bn_groups` as in
    /// [`super::SlowFast::forward`].
    pub fn forward(&self, x: &Tensor, bn_groups: i64, train: bool) -> Result<Tensor> {
        self.forward_bn(x, Bn::groups(bn_groups), train)
    }

    /// `forward` with BN statistics that may be synchronised over ranks.
    pub fn forward_bn(&self, x: &Tensor, bn: Bn, train: bool) -> Result<Tensor> {
        let y = self.features(x, bn, train)?;
        let feat = y
            .f_adaptive_avg_pool3d([1, 1, 1])?
            .f_flatten(1, -1)?
            .f_dropout(self.dropout, train)?;
        self.projection.forward(&feat)
    }

    /// Checks that the network can take `x`: 5-D float [N, 3, T, H, W]; T at least the pool
    /// after res2 and, past it, divisible by every non-local block's frame groups; BN groups
    /// that divide the batch and, in training, leave more than one value per channel at res5.
    pub fn check_input(&self, x: &Tensor, bn: Bn, train: bool) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidArgument(msg));
        let s = x.size();
        if s.len() != 5 || s[1] != 3 || s.iter().any(|&d| d < 1) {
            return bad(format!(
                "input {s:?} is not [N, 3, T, H, W] with positive sizes"
            ));
        }
        if !x.is_floating_point() {
            return bad(format!("input is {:?}, not floating point", x.kind()));
        }
        let t = s[2] / self.pool1[0];
        if t < 1 {
            return bad(format!(
                "{} frames are fewer than the temporal pool of {} after res2",
                s[2], self.pool1[0]
            ));
        }
        // Feature maps per stage: the stem's stride-2 convolution and max pool, then stride 2
        // from res3 on (3x3 kernels, padding 1: ceil(d / 2)).
        let half = |d: i64| (d - 1) / 2 + 1;
        let (mut h, mut w) = (half(half(s[3])), half(half(s[4])));
        for (i, stage) in self.stages.iter().enumerate() {
            if i > 0 {
                (h, w) = (half(h), half(w));
            }
            let t = if i == 0 { s[2] } else { t };
            for nonlocal in stage.iter().filter_map(|(_, n)| n.as_ref()) {
                nonlocal.check_maps([t, h, w], &format!("res{}", i + 2))?;
            }
        }
        if !train || bn.sync.is_some() {
            return Ok(());
        }
        let n = s[0];
        if bn.groups < 1 || n % bn.groups != 0 {
            return bad(format!(
                "bn_groups {} must divide the batch of {n} clips",
                bn.groups
            ));
        }
        let shrink = |d: i64| (d + 31) / 32;
        if n / bn.groups * t * shrink(s[3]) * shrink(s[4]) < 2 {
            return bad(format!(
                "a training batch of {n} clips in {} BN groups at {}x{}x{} leaves one value per \
                 channel at the last stage; BatchNorm needs more (more clips, frames or pixels, \
                 or fewer groups)",
                bn.groups, s[2], s[3], s[4]
            ));
        }
        Ok(())
    }

    /// Evaluation-mode class probabilities, as [`super::SlowFast::eval_probs`]; a
    /// [`HeadPool::Fixed`] kernel is the first (slow) entry.
    pub fn eval_probs(&self, x: &Tensor, pool: HeadPool) -> Result<Tensor> {
        self.eval_scores(x, pool, HeadAct::Softmax)
    }

    /// [`ResNet::eval_probs`] with the head's activation, as [`super::SlowFast::eval_scores`].
    pub fn eval_scores(&self, x: &Tensor, pool: HeadPool, act: HeadAct) -> Result<Tensor> {
        let y = self.features(x, Bn::groups(1), false)?;
        let d = y.size();
        let k = match pool {
            HeadPool::Global => None,
            HeadPool::Fixed([k, _]) => {
                let k = [k[0].min(d[2]), k[1].min(d[3]), k[2].min(d[4])];
                (k[..] != d[2..]).then_some(k)
            }
        };
        let Some(k) = k else {
            let logits = self
                .projection
                .forward(&y.f_adaptive_avg_pool3d([1, 1, 1])?.f_flatten(1, -1)?)?;
            return act.apply(&logits);
        };
        // The classifier at every pooled position, the scores averaged.
        let feat = y
            .f_avg_pool3d(k, [1, 1, 1], [0, 0, 0], false, true, None)?
            .f_permute([0, 2, 3, 4, 1])?;
        let probs = act.apply(&self.projection.forward(&feat)?)?;
        Ok(probs.f_mean_dim([1i64, 2, 3].as_slice(), false, tch::Kind::Float)?)
    }

    /// The last feature maps [N, C, T, H, W], before the head.
    pub fn features(&self, x: &Tensor, bn: Bn, train: bool) -> Result<Tensor> {
        self.check_input(x, bn, train)?;
        let x = if self.channels_last {
            &channels_last_3d(x)?
        } else {
            x
        };
        let mut y = self
            .stem
            .bn
            .forward(&self.stem.conv.forward(x)?, bn, train)?
            .f_relu()?
            .f_max_pool3d([1, 3, 3], [1, 2, 2], [0, 1, 1], [1, 1, 1], false)?;
        for (i, stage) in self.stages.iter().enumerate() {
            if i == 1 {
                y = y.f_max_pool3d(self.pool1, self.pool1, [0, 0, 0], [1, 1, 1], false)?;
            }
            for (block, nonlocal) in stage {
                y = block.forward(&y, bn, train)?;
                if let Some(n) = nonlocal {
                    y = n.forward(&y, bn, train)?;
                }
            }
        }
        Ok(y)
    }
}
