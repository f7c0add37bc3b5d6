//! PySlowFast's non-local block (Wang et al., "Non-local neural networks"): every position of
//! a clip's feature map attends to every (pooled) position, and the response is added back
//! through a 1x1x1 convolution and a BN. Parameter names are PySlowFast's `Nonlocal`'s:
//! `conv_theta`, `conv_phi`, `conv_g`, `conv_out` (each with `weight` and `bias`) and `bn`.

use tch::{nn, Tensor};

use super::bn::{Bn, GroupBatchNorm};
use super::{scalar, Conv3d};
use crate::error::{Error, Result};
use crate::schedule::{ModelConfig, NonlocalInstantiation};

/// A 1x1x1 convolution with a bias (zero at init), as PySlowFast's `nn.Conv3d` in `Nonlocal`.
#[derive(Debug)]
struct PointConv {
    conv: Conv3d,
    bias: Tensor,
}

impl PointConv {
    fn new(p: &nn::Path, cin: i64, cout: i64) -> Result<PointConv> {
        let conv = Conv3d::new(p, cin, cout, [1, 1, 1], [1, 1, 1], [0, 0, 0])?;
        let bias = p.f_var("bias", &[cout], nn::Init::Const(0.0))?;
        Ok(PointConv { conv, bias })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.conv;
        Ok(x.f_conv3d(
            &c.weight,
            Some(&self.bias),
            c.stride,
            c.padding,
            [1, 1, 1],
            1,
        )?)
    }
}

#[derive(Debug)]
pub struct Nonlocal {
    theta: PointConv,
    phi: PointConv,
    g: PointConv,
    out: PointConv,
    pub(super) bn: GroupBatchNorm,
    inner: i64,
    /// Max pool of the keys and values ([T, H, W], stride = kernel); None when all ones.
    pool: Option<[i64; 3]>,
    /// Frames are compared within `group` consecutive groups (PySlowFast's NONLOCAL.GROUP).
    group: i64,
    instantiation: NonlocalInstantiation,
}

impl Nonlocal {
    /// The block PySlowFast's ResStage puts after block `b` of stage `stage` (0 = res2) of
    /// pathway `pw`, on `dim` channels, as `{p}.pathway{pw}_nonlocal{b}`: present when
    /// `c.nonlocal_location` names that block, with its group, pool and instantiation.
    pub(super) fn after_block(
        p: &nn::Path,
        c: &ModelConfig,
        stage: usize,
        pw: usize,
        b: u32,
        dim: i64,
    ) -> Result<Option<Nonlocal>> {
        let (blocks, group, pool) = c.nonlocal_at(stage, pw);
        if !blocks.contains(&b) {
            return Ok(None);
        }
        Ok(Some(Nonlocal::new(
            &(p / format!("pathway{pw}_nonlocal{b}")),
            dim,
            pool.map(i64::from),
            i64::from(group),
            c.nonlocal_instantiation,
            c.zero_init_final_bn,
        )?))
    }

    /// A block on `dim` channels with `dim / 2` inside, under `p`. `zero_init`: the BN's scale
    /// starts at 0 (PySlowFast's RESNET.ZERO_INIT_FINAL_BN), so the block starts as identity.
    pub fn new(
        p: &nn::Path,
        dim: i64,
        pool: [i64; 3],
        group: i64,
        instantiation: NonlocalInstantiation,
        zero_init: bool,
    ) -> Result<Nonlocal> {
        let inner = dim / 2;
        Ok(Nonlocal {
            theta: PointConv::new(&(p / "conv_theta"), dim, inner)?,
            phi: PointConv::new(&(p / "conv_phi"), dim, inner)?,
            g: PointConv::new(&(p / "conv_g"), dim, inner)?,
            out: PointConv::new(&(p / "conv_out"), inner, dim)?,
            bn: GroupBatchNorm::new(&(p / "bn"), dim, zero_init)?,
            inner,
            pool: pool.iter().any(|&k| k > 1).then_some(pool),
            group,
            instantiation,
        })
    }

    /// The convolutions, for a change of memory format.
    pub(super) fn convs_mut(&mut self) -> impl Iterator<Item = &mut Conv3d> {
        [&mut self.theta, &mut self.phi, &mut self.g, &mut self.out]
            .into_iter()
            .map(|c| &mut c.conv)
    }

    /// Multiply-adds per clip on a [T, H, W] map `d` of `dim` channels.
    pub(super) fn macs(&self, d: [i64; 3]) -> f64 {
        let positions = (d[0] * d[1] * d[2]) as f64;
        let pooled = match self.pool {
            Some(k) => ((d[0] / k[0]) * (d[1] / k[1]) * (d[2] / k[2])) as f64,
            None => positions,
        };
        let c = (2 * self.inner) as f64;
        let inner = self.inner as f64;
        // theta and out on every position, phi and g on the pooled ones, then the two products
        // within each frame group.
        2.0 * positions * c * inner
            + 2.0 * pooled * c * inner
            + 2.0 * positions * pooled * inner / self.group as f64
    }

    /// The frame groups must divide the frames `t` that reach the block.
    pub(super) fn check_frames(&self, t: i64, what: &str) -> Result<()> {
        if t % self.group != 0 {
            return Err(Error::InvalidArgument(format!(
                "{what}: {t} frames do not split into the non-local block's {} groups",
                self.group
            )));
        }
        Ok(())
    }

    /// [`Nonlocal::check_frames`], and that the key/value pool fits the [T, H, W] feature map
    /// (a map smaller than the pool has no pooled position: libtorch's pool would fail).
    pub(super) fn check_maps(&self, [t, h, w]: [i64; 3], what: &str) -> Result<()> {
        self.check_frames(t, what)?;
        if let Some(k) = self.pool {
            if t / self.group < k[0] || h < k[1] || w < k[2] {
                return Err(Error::InvalidArgument(format!(
                    "{what}: the non-local block's {k:?} pool does not fit its {}x{h}x{w} feature \
                     map (frames per group x height x width); use a larger input or \
                     model.nonlocal_pool",
                    t / self.group
                )));
            }
        }
        Ok(())
    }

    /// x + BN(conv_out(attention(x))), on [N, C, T, H, W]; with `group` G > 1 the T frames are
    /// folded into the batch as N G clips of T / G frames first, as PySlowFast's ResStage does.
    pub fn forward(&self, x: &Tensor, bn: Bn, train: bool) -> Result<Tensor> {
        let size = x.size();
        let (n, c, t, h, w) = (size[0], size[1], size[2], size[3], size[4]);
        let gr = self.group;
        if gr == 1 {
            return self.forward_folded(x, bn, train);
        }
        self.check_frames(t, "non-local block")?;
        let folded = x
            .f_permute([0, 2, 1, 3, 4])?
            .f_reshape([n * gr, t / gr, c, h, w])?
            .f_permute([0, 2, 1, 3, 4])?;
        let y = self.forward_folded(&folded, bn, train)?;
        Ok(y.f_permute([0, 2, 1, 3, 4])?
            .f_reshape([n, t, c, h, w])?
            .f_permute([0, 2, 1, 3, 4])?)
    }

    fn forward_folded(&self, x: &Tensor, bn: Bn, train: bool) -> Result<Tensor> {
        let size = x.size();
        let (n, t, h, w) = (size[0], size[2], size[3], size[4]);
        let ci = self.inner;
        let theta = self.theta.forward(x)?.f_reshape([n, ci, -1])?;
        let pooled = match self.pool {
            Some(k) => x.f_max_pool3d(k, k, [0, 0, 0], [1, 1, 1], false)?,
            None => x.shallow_clone(),
        };
        let phi = self.phi.forward(&pooled)?.f_reshape([n, ci, -1])?;
        let g = self.g.forward(&pooled)?.f_reshape([n, ci, -1])?;
        // [N, THW, P]: every position against every pooled one.
        let affinity = theta.f_transpose(1, 2)?.f_bmm(&phi)?;
        let affinity = match self.instantiation {
            NonlocalInstantiation::Softmax => affinity
                .f_mul(&scalar((ci as f64).powf(-0.5))?)?
                .f_softmax(2, affinity.kind())?,
            NonlocalInstantiation::DotProduct => {
                let positions = affinity.size()[2];
                affinity.f_div(&scalar(positions)?)?
            }
        };
        // [N, Ci, THW]: the values weighted by each position's affinities.
        let response = g
            .f_bmm(&affinity.f_transpose(1, 2)?)?
            .f_reshape([n, ci, t, h, w])?;
        let p = self.bn.forward(&self.out.forward(&response)?, bn, train)?;
        Ok(x.f_add(&p)?)
    }
}
