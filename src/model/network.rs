//! The network `model.arch` names, behind one interface for the trainer, precise BN and
//! evaluation: SlowFast takes two pathways, the single-pathway ResNets (c2d, i3d, slow) the
//! fast one alone (every frame of the clip, as PySlowFast feeds them), so callers pass both
//! and a single-pathway network ignores the slow one, which collation does not pack for it
//! ([`ModelConfig::collate_alpha`] is 0).

use tch::{nn, Tensor};

use super::bn::{Bn, GroupBatchNorm};
use super::{HeadAct, HeadPool, ResNet, SlowFast};
use crate::error::Result;
use crate::schedule::{Arch, ModelConfig};

#[derive(Debug)]
pub enum Network {
    SlowFast(SlowFast),
    ResNet(ResNet),
}

impl Network {
    /// The network of `c.arch`, its parameters under `root` with PySlowFast's names. Errors:
    /// libtorch's.
    pub fn new(root: &nn::Path, c: &ModelConfig) -> Result<Network> {
        Ok(match c.arch {
            Arch::SlowFast => Network::SlowFast(SlowFast::new(root, c)?),
            Arch::C2d | Arch::I3d | Arch::Slow => Network::ResNet(ResNet::new(root, c)?),
        })
    }

    /// As [`SlowFast::set_channels_last`].
    pub fn set_channels_last(&mut self, on: bool) -> Result<()> {
        match self {
            Network::SlowFast(m) => m.set_channels_last(on),
            Network::ResNet(m) => m.set_channels_last(on),
        }
    }

    pub fn channels_last(&self) -> bool {
        match self {
            Network::SlowFast(m) => m.channels_last(),
            Network::ResNet(m) => m.channels_last(),
        }
    }

    /// Multiply-adds of one clip's forward pass at `frames` x `crop`^2 (see [`SlowFast::macs`]).
    pub fn macs(&self, frames: i64, crop: i64) -> f64 {
        match self {
            Network::SlowFast(m) => m.macs(frames, crop),
            Network::ResNet(m) => m.macs(frames, crop),
        }
    }

    /// Every BatchNorm of the network, for precise BN.
    pub fn batch_norms(&self) -> Vec<&GroupBatchNorm> {
        match self {
            Network::SlowFast(m) => m.batch_norms(),
            Network::ResNet(m) => m.batch_norms(),
        }
    }

    /// Logits [N, classes]; `slow` is not read by a single-pathway network (any tensor, an
    /// empty one included). See [`SlowFast::forward`].
    pub fn forward(
        &self,
        slow: &Tensor,
        fast: &Tensor,
        bn_groups: i64,
        train: bool,
    ) -> Result<Tensor> {
        self.forward_bn(slow, fast, Bn::groups(bn_groups), train)
    }

    /// `forward` with BN statistics that may be synchronised over ranks.
    pub fn forward_bn(&self, slow: &Tensor, fast: &Tensor, bn: Bn, train: bool) -> Result<Tensor> {
        match self {
            Network::SlowFast(m) => m.forward_bn(slow, fast, bn, train),
            Network::ResNet(m) => m.forward_bn(fast, bn, train),
        }
    }

    /// Checks that the network can take these inputs, with an error naming what does not fit.
    pub fn check_input(&self, slow: &Tensor, fast: &Tensor, bn: Bn, train: bool) -> Result<()> {
        match self {
            Network::SlowFast(m) => m.check_input(slow, fast, bn, train),
            Network::ResNet(m) => m.check_input(fast, bn, train),
        }
    }

    /// Evaluation scores with the head's activation (see [`SlowFast::eval_scores`]).
    pub fn eval_scores(
        &self,
        slow: &Tensor,
        fast: &Tensor,
        pool: HeadPool,
        act: HeadAct,
    ) -> Result<Tensor> {
        match self {
            Network::SlowFast(m) => m.eval_scores(slow, fast, pool, act),
            Network::ResNet(m) => m.eval_scores(fast, pool, act),
        }
    }

    /// PySlowFast's fixed head pool for training clips of `num_frames` x `crop`^2: the last
    /// feature maps of each pathway (T / alpha and T for SlowFast, T after the res2 pool for a
    /// ResNet; crop / 32 in space).
    pub fn head_pool_fixed(&self, num_frames: i64, crop: i64) -> HeadPool {
        match self {
            Network::SlowFast(m) => m.head_pool_fixed(num_frames, crop),
            Network::ResNet(m) => m.head_pool_fixed(num_frames, crop),
        }
    }
}
