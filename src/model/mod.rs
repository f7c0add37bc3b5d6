//! SlowFast (spec section 3) on libtorch, with PySlowFast's parameter names, so weights move
//! between the two by name: `s1.pathway0_stem.conv.weight`, `s1_fuse.conv_f2s.weight`,
//! `s2.pathway1_res0.branch1_bn.running_mean`, `s3.pathway0_res2.branch2.b_bn.weight`,
//! `head.projection.weight`, ...
//!
//! Nothing in the network depends on the input shape: the head pools globally, the lateral
//! fusion's temporal output follows T, and the BN group count is an argument of `forward`.
//! One model serves every multigrid shape without a rebuild.

pub mod bn;
pub mod network;
pub mod nonlocal;
pub mod resnet;

use tch::{nn, Tensor};

use crate::error::{Error, Result};
use crate::schedule::ModelConfig;
use bn::{Bn, GroupBatchNorm};
pub use network::Network;
use nonlocal::Nonlocal;
pub use resnet::ResNet;

/// A 3D convolution without bias, initialised as PySlowFast's `c2_msra_fill` (Kaiming normal,
/// fan-out, ReLU gain).
#[derive(Debug)]
struct Conv3d {
    weight: Tensor,
    stride: [i64; 3],
    padding: [i64; 3],
}

impl Conv3d {
    /// The weight is `{p}.weight`.
    fn new(
        p: &nn::Path,
        cin: i64,
        cout: i64,
        k: [i64; 3],
        stride: [i64; 3],
        padding: [i64; 3],
    ) -> Result<Conv3d> {
        let fan_out = (cout * k[0] * k[1] * k[2]) as f64;
        let weight = randn_var(
            p,
            "weight",
            &[cout, cin, k[0], k[1], k[2]],
            (2.0 / fan_out).sqrt(),
        )?;
        Ok(Conv3d {
            weight,
            stride,
            padding,
        })
    }

    /// The output's [T, H, W] for an input of `d`, and the multiply-adds per clip.
    fn macs(&self, d: [i64; 3]) -> ([i64; 3], f64) {
        let w = self.weight.size();
        let out: [i64; 3] =
            std::array::from_fn(|i| (d[i] + 2 * self.padding[i] - w[2 + i]) / self.stride[i] + 1);
        let per_output: i64 = w.iter().product();
        (out, out.iter().product::<i64>() as f64 * per_output as f64)
    }

    /// The convolution over the kernel taps that read the input somewhere: on a feature map
    /// of 1 x 1 (res5 at a 32-pixel crop, the slow pathway's single frame at a multigrid
    /// T/4 stage) a 3 x 3 kernel's outer taps multiply padding only. Their products are exact
    /// zeros and their gradient is zero whatever the kernel, so leaving them out changes no
    /// value beyond rounding; on the CPU it made a 16 x 16 x 32 step of the tiny SlowFast
    /// 1.47x faster (oneDNN's backward is slowest on such mostly-padding work).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (mut weight, mut padding) = (self.weight.shallow_clone(), self.padding);
        let (d, k) = (x.size(), self.weight.size());
        if d.len() == 5 && k.len() == 5 {
            for i in 0..3 {
                let (n, k, s, p) = (d[2 + i], k[2 + i], self.stride[i], self.padding[i]);
                if let Some((first, len, pad)) = live_taps(n, k, s, p) {
                    weight = weight.f_narrow(2 + i as i64, first, len)?;
                    padding[i] = pad;
                }
            }
        }
        Ok(x.f_conv3d(&weight, None::<Tensor>, self.stride, padding, [1, 1, 1], 1)?)
    }
}

/// One dimension of a convolution (input size `n`, kernel size `k`, stride `s`, padding `p`,
/// dilation 1): the first tap and the number of taps that read the input at some output
/// position, with the padding that keeps every output position where it was. None when every
/// tap is live, or when no symmetric padding keeps the output size.
fn live_taps(n: i64, k: i64, s: i64, p: i64) -> Option<(i64, i64, i64)> {
    if n < 1 || s < 1 || n + 2 * p < k {
        return None;
    }
    let out = (n + 2 * p - k) / s + 1;
    // Tap j reads input o * s - p + j at output o: live if one of those lies in [0, n).
    let live = |j: i64| {
        let a = j - p;
        let first_o = if a >= 0 { 0 } else { (-a + s - 1) / s };
        first_o < out && first_o * s + a < n
    };
    let first = (0..k).find(|&j| live(j))?;
    let last = (0..k).rev().find(|&j| live(j))?;
    let (len, pad) = (last - first + 1, p - first);
    let keeps = pad >= 0 && n + 2 * pad >= len && (n + 2 * pad - len) / s + 1 == out;
    (len < k && keeps).then_some((first, len, pad))
}

/// A residual block: bottleneck (depth 50, 101) or basic (depth 18), as PySlowFast's
/// `ResBlock` with `bottleneck_transform` / `basic_transform`.
#[derive(Debug)]
struct ResBlock {
    branch1: Option<(Conv3d, GroupBatchNorm)>,
    convs: Vec<(Conv3d, GroupBatchNorm)>,
}

impl ResBlock {
    #[allow(clippy::too_many_arguments)]
    fn new(
        p: &nn::Path,
        cin: i64,
        cout: i64,
        inner: i64,
        kt: i64,
        stride: i64,
        bottleneck: bool,
        zero_init: bool,
    ) -> Result<ResBlock> {
        let branch1 = if cin != cout || stride != 1 {
            Some((
                Conv3d::new(
                    &(p / "branch1"),
                    cin,
                    cout,
                    [1, 1, 1],
                    [1, stride, stride],
                    [0, 0, 0],
                )?,
                GroupBatchNorm::new(&(p / "branch1_bn"), cout, false)?,
            ))
        } else {
            None
        };
        let b = p / "branch2";
        let convs = if bottleneck {
            vec![
                (
                    Conv3d::new(
                        &(&b / "a"),
                        cin,
                        inner,
                        [kt, 1, 1],
                        [1, 1, 1],
                        [kt / 2, 0, 0],
                    )?,
                    GroupBatchNorm::new(&(&b / "a_bn"), inner, false)?,
                ),
                (
                    Conv3d::new(
                        &(&b / "b"),
                        inner,
                        inner,
                        [1, 3, 3],
                        [1, stride, stride],
                        [0, 1, 1],
                    )?,
                    GroupBatchNorm::new(&(&b / "b_bn"), inner, false)?,
                ),
                (
                    Conv3d::new(&(&b / "c"), inner, cout, [1, 1, 1], [1, 1, 1], [0, 0, 0])?,
                    GroupBatchNorm::new(&(&b / "c_bn"), cout, zero_init)?,
                ),
            ]
        } else {
            vec![
                (
                    Conv3d::new(
                        &(&b / "a"),
                        cin,
                        cout,
                        [kt, 3, 3],
                        [1, stride, stride],
                        [kt / 2, 1, 1],
                    )?,
                    GroupBatchNorm::new(&(&b / "a_bn"), cout, false)?,
                ),
                (
                    Conv3d::new(&(&b / "b"), cout, cout, [1, 3, 3], [1, 1, 1], [0, 1, 1])?,
                    GroupBatchNorm::new(&(&b / "b_bn"), cout, zero_init)?,
                ),
            ]
        };
        Ok(ResBlock { branch1, convs })
    }

    /// The output's [T, H, W] for an input of `d`, and the multiply-adds per clip.
    fn macs(&self, d: [i64; 3]) -> ([i64; 3], f64) {
        let mut total = self.branch1.as_ref().map_or(0.0, |(c, _)| c.macs(d).1);
        let mut x = d;
        for (conv, _) in &self.convs {
            let (out, m) = conv.macs(x);
            x = out;
            total += m;
        }
        (x, total)
    }

    fn forward(&self, x: &Tensor, groups: Bn, train: bool) -> Result<Tensor> {
        let shortcut = match &self.branch1 {
            Some((conv, bn)) => bn.forward(&conv.forward(x)?, groups, train)?,
            None => x.shallow_clone(),
        };
        let last = self.convs.len() - 1;
        let mut y = x.shallow_clone();
        for (i, (conv, bn)) in self.convs.iter().enumerate() {
            y = bn.forward(&conv.forward(&y)?, groups, train)?;
            if i < last {
                y = y.f_relu()?;
            }
        }
        Ok(shortcut.f_add(&y)?.f_relu()?)
    }
}

/// Fast -> slow lateral connection: Conv3d (k, 1, 1) with temporal stride alpha, BN, ReLU.
#[derive(Debug)]
struct Fuse {
    conv: Conv3d,
    bn: GroupBatchNorm,
}

impl Fuse {
    fn new(p: &nn::Path, fast: i64, ratio: i64, k: i64, alpha: i64) -> Result<Fuse> {
        Ok(Fuse {
            conv: Conv3d::new(
                &(p / "conv_f2s"),
                fast,
                fast * ratio,
                [k, 1, 1],
                [alpha, 1, 1],
                [k / 2, 0, 0],
            )?,
            bn: GroupBatchNorm::new(&(p / "bn"), fast * ratio, false)?,
        })
    }

    fn forward(&self, slow: &Tensor, fast: &Tensor, groups: Bn, train: bool) -> Result<Tensor> {
        let lateral = self
            .bn
            .forward(&self.conv.forward(fast)?, groups, train)?
            .f_relu()?;
        Ok(Tensor::f_cat(&[slow, &lateral], 1)?)
    }
}

#[derive(Debug)]
struct Stem {
    conv: Conv3d,
    bn: GroupBatchNorm,
}

#[derive(Debug)]
pub struct SlowFast {
    stems: [Stem; 2],
    /// stages[i][pathway] = blocks of res(i + 2), each optionally followed by a non-local
    /// block (SlowFast-NL).
    stages: Vec<[resnet::Stage; 2]>,
    /// Fusions after the stem, res2, res3, res4.
    fuses: Vec<Fuse>,
    projection: Linear,
    dropout: f64,
    alpha: i64,
    /// Inputs and convolution weights in channels-last-3d (NDHWC) memory format.
    channels_last: bool,
}

impl SlowFast {
    /// The network for `c`, its parameters created under `root`. Errors: libtorch's (out of
    /// memory for a huge width), never a panic.
    pub fn new(root: &nn::Path, c: &ModelConfig) -> Result<SlowFast> {
        let w = i64::from(c.width_per_group);
        let beta = i64::from(c.beta_inv);
        let ratio = i64::from(c.fusion_conv_channel_ratio);
        let alpha = i64::from(c.alpha);
        let kf = i64::from(c.fusion_kernel_sz);
        let bottleneck = c.depth != 18;
        let blocks: [i64; 4] = match c.depth {
            18 => [2, 2, 2, 2],
            101 => [3, 4, 23, 3],
            _ => [3, 4, 6, 3],
        };
        // Temporal kernels per stage (res2..res5) for the slow and fast pathways.
        let kt = [[1, 1, 3, 3], [3, 3, 3, 3]];
        let s1 = root / "s1";
        let stem = |pw: usize| -> Result<Stem> {
            let p = &s1 / format!("pathway{pw}_stem");
            let (cout, k) = if pw == 0 { (w, 1) } else { (w / beta, 5) };
            Ok(Stem {
                conv: Conv3d::new(&(&p / "conv"), 3, cout, [k, 7, 7], [1, 2, 2], [k / 2, 3, 3])?,
                bn: GroupBatchNorm::new(&(&p / "bn"), cout, false)?,
            })
        };
        let stems = [stem(0)?, stem(1)?];
        let mut fuses = vec![Fuse::new(&(root / "s1_fuse"), w / beta, ratio, kf, alpha)?];
        let mut slow_in = w + w / beta * ratio;
        let mut fast_in = w / beta;
        let mut stages = Vec::with_capacity(4);
        for (i, &n) in blocks.iter().enumerate() {
            let out = w * 4 * (1 << i);
            let inner = w * (1 << i);
            let stride = if i == 0 { 1 } else { 2 };
            let stage = root / format!("s{}", i + 2);
            let pathway = |pw: usize, cin: i64, cout: i64, inner: i64| -> Result<resnet::Stage> {
                (0..n)
                    .map(|b| {
                        let block = ResBlock::new(
                            &(&stage / format!("pathway{pw}_res{b}")),
                            if b == 0 { cin } else { cout },
                            cout,
                            inner,
                            kt[pw][i],
                            if b == 0 { stride } else { 1 },
                            bottleneck,
                            c.zero_init_final_bn,
                        )?;
                        let nonlocal = Nonlocal::after_block(&stage, c, i, pw, b as u32, cout)?;
                        Ok((block, nonlocal))
                    })
                    .collect::<Result<resnet::Stage>>()
            };
            stages.push([
                pathway(0, slow_in, out, inner)?,
                pathway(1, fast_in, out / beta, inner / beta)?,
            ]);
            if i < 3 {
                fuses.push(Fuse::new(
                    &(root / format!("s{}_fuse", i + 2)),
                    out / beta,
                    ratio,
                    kf,
                    alpha,
                )?);
            }
            slow_in = out + out / beta * ratio;
            fast_in = out / beta;
        }
        let last = w * 4 * 8;
        let head_in = last + last / beta;
        let projection = Linear::new(
            &(root / "head" / "projection"),
            head_in,
            i64::from(c.num_classes),
        )?;
        Ok(SlowFast {
            stems,
            stages,
            fuses,
            projection,
            dropout: c.dropout_rate,
            alpha,
            channels_last: false,
        })
    }

    /// Moves every convolution weight to channels-last-3d memory format (NDHWC strides; the
    /// values and the parameters' identity are unchanged, so optimizers and checkpoints are
    /// unaffected) and makes every forward pass convert its inputs the same way, as PyTorch's
    /// `model.to(memory_format=torch.channels_last_3d)` with channels-last inputs. `false`
    /// goes back to the default contiguous layout.
    pub fn set_channels_last(&mut self, on: bool) -> Result<()> {
        let convs = self
            .stems
            .iter_mut()
            .map(|s| &mut s.conv)
            .chain(self.fuses.iter_mut().map(|f| &mut f.conv))
            .chain(stage_convs(
                self.stages.iter_mut().flat_map(|s| s.iter_mut()),
            ));
        set_conv_layout(convs, on)?;
        self.channels_last = on;
        Ok(())
    }

    /// Multiply-adds of one clip's forward pass at `frames` (the fast pathway's) x `crop`^2:
    /// every convolution and the classifier (BN, ReLU and pooling are a rounding error), what
    /// papers call a model's GFLOPs. Feature maps shrink by strided convolutions that round up,
    /// so below 32 pixels the cost falls more slowly than crop^2 (spec section 3.7).
    pub fn macs(&self, frames: i64, crop: i64) -> f64 {
        let pool = |d: [i64; 3]| [d[0], (d[1] - 1) / 2 + 1, (d[2] - 1) / 2 + 1];
        let mut dims = [[frames / self.alpha, crop, crop], [frames, crop, crop]];
        let mut total = 0.0;
        for (pw, stem) in self.stems.iter().enumerate() {
            let (out, m) = stem.conv.macs(dims[pw]);
            dims[pw] = pool(out);
            total += m;
        }
        total += self.fuses[0].conv.macs(dims[1]).1;
        for (i, stage) in self.stages.iter().enumerate() {
            for pw in 0..2 {
                for (block, nonlocal) in &stage[pw] {
                    let (out, m) = block.macs(dims[pw]);
                    dims[pw] = out;
                    total += m + nonlocal.as_ref().map_or(0.0, |n| n.macs(out));
                }
            }
            if i < 3 {
                total += self.fuses[i + 1].conv.macs(dims[1]).1;
            }
        }
        total + self.projection.weight.numel() as f64
    }

    /// The fixed head pool for training clips of `num_frames` x `crop`^2: the last feature
    /// maps of each pathway, [T / alpha, ceil(crop / 32), ceil(crop / 32)] and [T, ...], for
    /// [`SlowFast::eval_probs`].
    pub fn head_pool_fixed(&self, num_frames: i64, crop: i64) -> HeadPool {
        let m = (crop + 31) / 32;
        HeadPool::Fixed([[num_frames / self.alpha, m, m], [num_frames, m, m]])
    }

    /// Whether [`SlowFast::set_channels_last`] is on.
    pub fn channels_last(&self) -> bool {
        self.channels_last
    }

    /// Every BatchNorm of the network, for precise BN.
    pub fn batch_norms(&self) -> Vec<&GroupBatchNorm> {
        let mut v: Vec<&GroupBatchNorm> = self.stems.iter().map(|s| &s.bn).collect();
        v.extend(self.fuses.iter().map(|f| &f.bn));
        for stage in &self.stages {
            for (block, nonlocal) in stage.iter().flatten() {
                v.extend(block.branch1.iter().map(|b| &b.1));
                v.extend(block.convs.iter().map(|c| &c.1));
                v.extend(nonlocal.iter().map(|n| &n.bn));
            }
        }
        v
    }

    /// Logits [N, classes] for the slow [N, 3, T/alpha, H, W] and fast [N, 3, T, H, W] inputs.
    /// `bn_groups` is the plan step's statistics group count (used in training only). Errors:
    /// inputs the network cannot take (see [`SlowFast::check_input`]), libtorch's.
    pub fn forward(
        &self,
        slow: &Tensor,
        fast: &Tensor,
        bn_groups: i64,
        train: bool,
    ) -> Result<Tensor> {
        self.forward_bn(slow, fast, Bn::groups(bn_groups), train)
    }

    /// Checks that the network can take these inputs, with an error naming what does not fit:
    /// 5-D float [N, 3, T, H, W] pathways that agree on N, H and W; a slow pathway of T / alpha
    /// frames, which is also what the strided lateral connections make of the fast one; BN
    /// groups that divide the batch; and in training more than one value per channel in every
    /// BN group at the last stage (H and W shrink 32-fold).
    pub fn check_input(&self, slow: &Tensor, fast: &Tensor, bn: Bn, train: bool) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidArgument(msg));
        let (ss, fs) = (slow.size(), fast.size());
        for (name, t, s) in [("slow", slow, &ss), ("fast", fast, &fs)] {
            if s.len() != 5 || s[1] != 3 || s.iter().any(|&d| d < 1) {
                return bad(format!(
                    "{name} pathway {s:?} is not [N, 3, T, H, W] with positive sizes"
                ));
            }
            if !t.is_floating_point() {
                return bad(format!(
                    "{name} pathway is {:?}, not floating point",
                    t.kind()
                ));
            }
        }
        if ss[0] != fs[0] || ss[3..] != fs[3..] {
            return bad(format!("slow {ss:?} and fast {fs:?} disagree on N, H or W"));
        }
        let (ts, tf) = (ss[2], fs[2]);
        // The lateral convs stride the fast pathway by alpha with "same" padding: (T - 1) / alpha
        // + 1 frames, which must meet the slow pathway's T / alpha.
        if ts != tf / self.alpha || ts != (tf - 1) / self.alpha + 1 {
            return bad(format!(
                "the slow pathway has {ts} frames; with {tf} fast frames and alpha {} it needs {} \
                 (fast frames a multiple of alpha)",
                self.alpha,
                tf / self.alpha
            ));
        }
        // Non-local blocks: their frame groups and pools must fit each pathway's maps (the
        // stem's stride-2 convolution and max pool, then stride 2 from res3 on).
        let half = |d: i64| (d - 1) / 2 + 1;
        let (mut h, mut w) = (half(half(ss[3])), half(half(ss[4])));
        for (i, stage) in self.stages.iter().enumerate() {
            if i > 0 {
                (h, w) = (half(h), half(w));
            }
            for (pw, t) in [(0, ts), (1, tf)] {
                for nonlocal in stage[pw].iter().filter_map(|(_, n)| n.as_ref()) {
                    nonlocal.check_maps([t, h, w], &format!("res{} pathway{pw}", i + 2))?;
                }
            }
        }
        if !train {
            return Ok(());
        }
        let n = ss[0];
        if bn.sync.is_none() && (bn.groups < 1 || n % bn.groups != 0) {
            return bad(format!(
                "bn_groups {} must divide the batch of {n} clips",
                bn.groups
            ));
        }
        let shrink = |d: i64| (d + 31) / 32;
        let per_channel = n / bn.groups.max(1) * ts * shrink(ss[3]) * shrink(ss[4]);
        if bn.sync.is_none() && per_channel < 2 {
            return bad(format!(
                "a training batch of {n} clips in {} BN groups at {ts}x{}x{} (slow) leaves one \
                 value per channel at the last stage; BatchNorm needs more (more clips, frames \
                 or pixels, or fewer groups)",
                bn.groups, ss[3], ss[4]
            ));
        }
        Ok(())
    }

    /// `forward` with BN statistics that may be synchronised over ranks.
    pub fn forward_bn(&self, slow: &Tensor, fast: &Tensor, bn: Bn, train: bool) -> Result<Tensor> {
        let x = self.features(slow, fast, bn, train)?;
        let feat = pool_global(&x)?.f_dropout(self.dropout, train)?;
        self.projection.forward(&feat)
    }

    /// Evaluation-mode class probabilities [N, classes] (softmax), as PySlowFast's head returns
    /// them in eval mode. With [`HeadPool::Fixed`] smaller than the last feature maps the
    /// classifier runs at every pooled position (fully convolutional) and the probabilities
    /// are averaged; a kernel as large as the maps is the global pool of [`SlowFast::forward`].
    pub fn eval_probs(&self, slow: &Tensor, fast: &Tensor, pool: HeadPool) -> Result<Tensor> {
        self.eval_scores(slow, fast, pool, HeadAct::Softmax)
    }

    /// [`SlowFast::eval_probs`] with the head's activation (`model.head_act`): sigmoid scores
    /// for a multi-label task, applied at every position before the mean, as PySlowFast does.
    pub fn eval_scores(
        &self,
        slow: &Tensor,
        fast: &Tensor,
        pool: HeadPool,
        act: HeadAct,
    ) -> Result<Tensor> {
        let x = self.features(slow, fast, Bn::groups(1), false)?;
        let kernels = match pool {
            HeadPool::Global => None,
            HeadPool::Fixed(k) => {
                let clamp = |t: &Tensor, k: [i64; 3]| -> [i64; 3] {
                    let d = t.size();
                    [k[0].min(d[2]), k[1].min(d[3]), k[2].min(d[4])]
                };
                let k = [clamp(&x[0], k[0]), clamp(&x[1], k[1])];
                let whole = |t: &Tensor, k: [i64; 3]| t.size()[2..] == k[..];
                (!(whole(&x[0], k[0]) && whole(&x[1], k[1]))).then_some(k)
            }
        };
        let Some(k) = kernels else {
            let logits = self.projection.forward(&pool_global(&x)?)?;
            return act.apply(&logits);
        };
        let pooled = [
            x[0].f_avg_pool3d(k[0], [1, 1, 1], [0, 0, 0], false, true, None)?,
            x[1].f_avg_pool3d(k[1], [1, 1, 1], [0, 0, 0], false, true, None)?,
        ];
        if pooled[0].size()[2..] != pooled[1].size()[2..] {
            return Err(Error::InvalidArgument(format!(
                "the fully convolutional head's pathways pool to {:?} and {:?} positions",
                &pooled[0].size()[2..],
                &pooled[1].size()[2..]
            )));
        }
        // [N, C, t, h, w] -> [N, t, h, w, C]: the classifier at every position.
        let feat = Tensor::f_cat(&pooled, 1)?.f_permute([0, 2, 3, 4, 1])?;
        let probs = act.apply(&self.projection.forward(&feat)?)?;
        Ok(probs.f_mean_dim([1i64, 2, 3].as_slice(), false, tch::Kind::Float)?)
    }

    /// The last feature maps of both pathways, [N, C, T, H, W] each, before the head.
    pub fn features(
        &self,
        slow: &Tensor,
        fast: &Tensor,
        bn: Bn,
        train: bool,
    ) -> Result<[Tensor; 2]> {
        self.check_input(slow, fast, bn, train)?;
        let (slow, fast) = if self.channels_last {
            (&channels_last_3d(slow)?, &channels_last_3d(fast)?)
        } else {
            (slow, fast)
        };
        let stem = |s: &Stem, x: &Tensor| -> Result<Tensor> {
            Ok(s.bn
                .forward(&s.conv.forward(x)?, bn, train)?
                .f_relu()?
                .f_max_pool3d([1, 3, 3], [1, 2, 2], [0, 1, 1], [1, 1, 1], false)?)
        };
        let mut x = [stem(&self.stems[0], slow)?, stem(&self.stems[1], fast)?];
        x[0] = self.fuses[0].forward(&x[0], &x[1], bn, train)?;
        for (i, stage) in self.stages.iter().enumerate() {
            for pw in 0..2 {
                for (block, nonlocal) in &stage[pw] {
                    x[pw] = block.forward(&x[pw], bn, train)?;
                    if let Some(n) = nonlocal {
                        x[pw] = n.forward(&x[pw], bn, train)?;
                    }
                }
            }
            if i < 3 {
                x[0] = self.fuses[i + 1].forward(&x[0], &x[1], bn, train)?;
            }
        }
        Ok(x)
    }
}

/// Every convolution of `stages`' residual and non-local blocks.
fn stage_convs<'a>(
    stages: impl Iterator<Item = &'a mut resnet::Stage>,
) -> impl Iterator<Item = &'a mut Conv3d> {
    stages.flat_map(|stage| {
        stage.iter_mut().flat_map(|(block, nonlocal)| {
            block
                .branch1
                .iter_mut()
                .map(|b| &mut b.0)
                .chain(block.convs.iter_mut().map(|c| &mut c.0))
                .chain(nonlocal.iter_mut().flat_map(|n| n.convs_mut()))
        })
    })
}

/// Each convolution's weight in channels-last-3d strides (`on`) or contiguous ones.
fn set_conv_layout<'a>(convs: impl Iterator<Item = &'a mut Conv3d>, on: bool) -> Result<()> {
    for conv in convs {
        let w = tch::no_grad(|| {
            if on {
                channels_last_3d(&conv.weight)
            } else {
                Ok(conv.weight.f_contiguous()?)
            }
        })?;
        // set_data swaps the storage under the same parameter, which the VarStore and the
        // optimizer share.
        conv.weight.f_set_data(&w)?;
    }
    Ok(())
}

/// `x` (5-D) with channels-last-3d strides, as PyTorch's
/// `x.contiguous(memory_format=torch.channels_last_3d)`: tch has no memory-format argument, and
/// libtorch reads the format from the strides. No copy when `x` already has them.
pub fn channels_last_3d(x: &Tensor) -> Result<Tensor> {
    if is_channels_last_3d(x) {
        return Ok(x.shallow_clone());
    }
    Ok(x.f_permute([0, 2, 3, 4, 1])?
        .f_contiguous()?
        .f_permute([0, 4, 1, 2, 3])?)
}

/// Whether the 5-D `x` is laid out NDHWC (dimensions of size 1 may have any stride).
pub fn is_channels_last_3d(x: &Tensor) -> bool {
    let (size, stride) = (x.size(), x.stride());
    if size.len() != 5 {
        return false;
    }
    let mut expected = 1;
    for d in [1, 4, 3, 2, 0] {
        if size[d] != 1 && stride[d] != expected {
            return false;
        }
        expected *= size[d];
    }
    true
}

/// Both pathways averaged over T, H and W and concatenated: [N, C_slow + C_fast].
fn pool_global(x: &[Tensor; 2]) -> Result<Tensor> {
    let pooled = x
        .iter()
        .map(|t| Ok(t.f_adaptive_avg_pool3d([1, 1, 1])?.f_flatten(1, -1)?))
        .collect::<Result<Vec<Tensor>>>()?;
    Ok(Tensor::f_cat(&pooled, 1)?)
}

/// `v` as a 0-dim CPU tensor, the constant operand of arithmetic that must return its errors.
/// tch 0.24's `f_*_scalar` functions (and the `Tensor` operators) panic when libtorch fails,
/// even the fallible ones: the `Scalar` they make is dropped before the error is read, and its
/// `Drop` unwraps that error. A 0-dim tensor takes part in an op as a scalar does (no type
/// promotion, any device), so the results are the same.
pub(crate) fn scalar<T: tch::kind::Element>(v: T) -> Result<Tensor> {
    Ok(Tensor::f_from_slice(&[v])?.f_view(())?)
}

/// A parameter `name` under `p` drawn from N(0, `stdev`^2): the draw of tch's `Init::Randn`
/// (same seed, same values), scaled here because tch scales with a panicking operator.
fn randn_var(p: &nn::Path, name: &str, dims: &[i64], stdev: f64) -> Result<Tensor> {
    let unit = nn::Init::Randn {
        mean: 0.0,
        stdev: 1.0,
    };
    let mut w = p.f_var(name, dims, unit)?;
    let _ = tch::no_grad(|| w.f_mul_(&scalar(stdev)?).map_err(Error::from))?;
    Ok(w)
}

/// The head's activation at evaluation (PySlowFast's MODEL.HEAD_ACT), `model.head_act`.
pub use crate::schedule::HeadAct;

impl HeadAct {
    /// Over the last dimension, in float32 whatever the autocast dtype of the logits.
    fn apply(self, logits: &Tensor) -> Result<Tensor> {
        Ok(match self {
            HeadAct::Softmax => logits.f_softmax(-1, tch::Kind::Float)?,
            HeadAct::Sigmoid => logits.f_to_kind(tch::Kind::Float)?.f_sigmoid()?,
        })
    }
}

/// How the head pools the last feature maps at evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadPool {
    /// Global average: one score per clip (PySlowFast with the short cycle, whose head pools
    /// adaptively).
    Global,
    /// PySlowFast's fixed AvgPool3d with stride 1, kernels [T, H, W] for the slow and the fast
    /// pathway: the training feature maps when the short cycle is off. A larger test input
    /// yields several positions; a kernel past the maps is cut to them.
    Fixed([[i64; 3]; 2]),
}

/// The classifier: PySlowFast's `nn.Linear` with weight ~ N(0, 0.01) and a zero bias (created
/// in that order, as tch's `nn::linear` does, so seeded weights stay the same).
#[derive(Debug)]
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn new(p: &nn::Path, cin: i64, cout: i64) -> Result<Linear> {
        let weight = randn_var(p, "weight", &[cout, cin], 0.01)?;
        let bias = p.f_var("bias", &[cout], nn::Init::Const(0.0))?;
        Ok(Linear { weight, bias })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_linear(&self.weight, Some(&self.bias))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// Every shape where taps are left out gives the full convolution's output and gradients
    /// (input and weight, the left-out taps' zero included), in float64.
    #[test]
    fn live_taps_keep_the_convolution() {
        tch::manual_seed(0);
        let mut sliced = 0;
        for (n, k, s) in [
            (1, 3, 1),
            (1, 5, 1),
            (1, 7, 2),
            (2, 3, 2),
            (2, 3, 1),
            (3, 7, 2),
        ] {
            // Paddings at which the kernel fits the padded input.
            for p in (0..=k / 2).filter(|p| n + 2 * p >= k) {
                for (t, tk) in [(1, 3), (4, 1), (2, 3)] {
                    let x = Tensor::randn([2, 3, t, n, n + 1], (Kind::Double, Device::Cpu));
                    let w = Tensor::randn([4, 3, tk, k, k], (Kind::Double, Device::Cpu));
                    let (x, w) = (x.set_requires_grad(true), w.set_requires_grad(true));
                    let conv = Conv3d {
                        weight: w.shallow_clone(),
                        stride: [1, s, s],
                        padding: [tk / 2, p, p],
                    };
                    let full = x.conv3d(&w, None::<Tensor>, conv.stride, conv.padding, 1, 1);
                    let g = Tensor::randn(full.size(), (Kind::Double, Device::Cpu));
                    let grads = Tensor::run_backward(&[&full * &g], &[&x, &w], false, false);
                    let ours = conv.forward(&x).unwrap();
                    let ours_grads = Tensor::run_backward(&[&ours * &g], &[&x, &w], false, false);
                    assert_eq!(ours.size(), full.size(), "n {n} k {k} s {s} p {p} t {t}");
                    let diff = |a: &Tensor, b: &Tensor| f64::try_from((a - b).abs().max()).unwrap();
                    assert!(diff(&ours, &full) < 1e-12, "n {n} k {k} s {s} p {p} t {t}");
                    for (a, b) in ours_grads.iter().zip(&grads) {
                        assert!(diff(a, b) < 1e-12, "grad: n {n} k {k} s {s} p {p} t {t}");
                    }
                    sliced += usize::from(
                        live_taps(n, k, s, p).is_some() || live_taps(t, tk, 1, tk / 2).is_some(),
                    );
                }
            }
        }
        assert!(sliced >= 10, "only {sliced} shapes left taps out");
    }

    #[test]
    fn live_taps_of_known_shapes() {
        // res5 at a 32-pixel crop: 1 x 1, 3 x 3 kernel, padding 1: the centre tap alone.
        assert_eq!(live_taps(1, 3, 1, 1), Some((1, 1, 0)));
        // res5's first block at a 2 x 2 input, stride 2: taps 1 and 2.
        assert_eq!(live_taps(2, 3, 2, 1), Some((1, 2, 0)));
        // Every tap reads data.
        assert_eq!(live_taps(2, 3, 1, 1), None);
        assert_eq!(live_taps(56, 7, 2, 3), None);
        // No padding: nothing to leave out.
        assert_eq!(live_taps(1, 1, 1, 0), None);
    }
}
