//! Weights that are not ours for [`Trainer::init_from`](super::Trainer::init_from):
//! PySlowFast's Caffe2 checkpoints of SlowFast and of the single-pathway ResNets (blob names
//! such as `t_res3_1_branch2a_bn_riv` or `nonlocal_conv3_1_theta_w`, converted to our names as
//! PySlowFast's `c2_model_loading` converts them) and 2D ImageNet ResNets with torchvision's
//! names (`layer2.0.downsample.1.weight`), mapped onto pathway 0 (SlowFast's slow pathway, or
//! a C2D, I3D or Slow model's only one) and inflated to 3D as PySlowFast's CHECKPOINT_INFLATE
//! does.

use tch::Tensor;

use crate::error::Result;

/// Where a file of weights came from, told by its names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Our names (our checkpoints, PySlowFast's `.pyth`).
    Ours,
    /// Caffe2 blob names (PySlowFast's CHECKPOINT_TYPE caffe2 `.pkl`).
    Caffe2,
    /// A 2D ResNet with torchvision's names (`conv1.weight`, `layer1.0.conv1.weight`, `fc.*`).
    Torchvision2d,
}

impl Source {
    /// Told by the names: torchvision's stem and first stage, or Caffe2's dotless blob names
    /// with its stem or classifier; otherwise ours.
    pub fn of<'a>(names: impl Iterator<Item = &'a str> + Clone) -> Source {
        let has = |n: &str| names.clone().any(|k| k == n);
        if has("conv1.weight") && names.clone().any(|k| k.starts_with("layer1.")) {
            Source::Torchvision2d
        } else if names.clone().all(|k| !k.contains('.')) && (has("conv1_w") || has("pred_w")) {
            Source::Caffe2
        } else {
            Source::Ours
        }
    }
}

/// Caffe2 blobs that are solver state rather than weights, which PySlowFast's loader passes
/// over without a word: momentum buffers, the learning rate, the iteration counter.
pub fn caffe2_solver_state(blob: &str) -> bool {
    blob.ends_with("_momentum") || blob == "lr" || blob == "model_iter"
}

/// A Caffe2 BN blob's suffix as our BN tensor: `s` the scale, `b` the shift, `rm` the running
/// mean, `riv` the running variance.
fn bn_field(suffix: &str) -> Option<&'static str> {
    Some(match suffix {
        "s" => "weight",
        "b" => "bias",
        "rm" => "running_mean",
        "riv" => "running_var",
        _ => return None,
    })
}

/// `"{digits}_"` at the start of `s`: the number and the rest.
fn number(s: &str) -> Option<(u32, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit())?;
    let rest = s[end..].strip_prefix('_')?;
    Some((s[..end].parse().ok()?, rest))
}

/// Our name for a Caffe2 blob of a SlowFast or a single-pathway ResNet (C2D, I3D, Slow), as
/// PySlowFast's `c2_model_loading` names them: `conv1_w` / `res_conv1_bn_` the stem, `resS_B_`
/// block B of stage S, `branch2{a,b,c}` / `branch1` the block's convolutions, `_w` a weight,
/// `_bn_{s,b,rm,riv}` a BN's tensors, `nonlocal_convS_B_` the non-local block after block B of
/// stage S (`theta`, `phi`, `g`, `out` its convolutions with `_w` and `_b`, `bn` its BN),
/// `pred_` the classifier, all on pathway 0; and SlowFast's `t_` the fast pathway,
/// `t_pool1_subsample` and `t_resS_B_branch2X_bn_subsample` the lateral connections. None when
/// the blob is nothing of ours.
pub fn caffe2_name(blob: &str) -> Option<String> {
    if let Some(r) = blob.strip_prefix("nonlocal_conv") {
        return caffe2_nonlocal(r);
    }
    let (pw, rest) = match blob.strip_prefix("t_") {
        Some(r) => (1, r),
        None => (0, blob),
    };
    if pw == 0 {
        if let Some(r) = rest.strip_prefix("pred_") {
            return match r {
                "w" => Some("head.projection.weight".into()),
                "b" => Some("head.projection.bias".into()),
                _ => None,
            };
        }
    }
    // A lateral connection (fast to slow): its convolution and BN.
    let fuse = |stage: &str, r: &str| -> Option<String> {
        match r {
            "w" => Some(format!("{stage}_fuse.conv_f2s.weight")),
            _ => Some(format!(
                "{stage}_fuse.bn.{}",
                bn_field(r.strip_prefix("bn_")?)?
            )),
        }
    };
    if pw == 1 {
        if let Some(r) = rest.strip_prefix("pool1_subsample_") {
            return fuse("s1", r);
        }
    }
    let stem = format!("s1.pathway{pw}_stem");
    // `res_conv1_w` too: PySlowFast maps both spellings of the stem's convolution.
    if rest == "conv1_w" || rest == "res_conv1_w" {
        return Some(format!("{stem}.conv.weight"));
    }
    if let Some(r) = rest.strip_prefix("res_conv1_bn_") {
        return Some(format!("{stem}.bn.{}", bn_field(r)?));
    }
    let (stage, r) = number(rest.strip_prefix("res")?)?;
    let (block, r) = number(r)?;
    let prefix = format!("s{stage}.pathway{pw}_res{block}");
    if let Some(r) = r.strip_prefix("branch1_") {
        return match r {
            "w" => Some(format!("{prefix}.branch1.weight")),
            _ => Some(format!(
                "{prefix}.branch1_bn.{}",
                bn_field(r.strip_prefix("bn_")?)?
            )),
        };
    }
    let r = r.strip_prefix("branch2")?;
    let conv = r.chars().next().filter(|c| c.is_ascii_lowercase())?;
    let r = r[1..].strip_prefix('_')?;
    if pw == 1 {
        if let Some(r) = r.strip_prefix("bn_subsample_") {
            return fuse(&format!("s{stage}"), r);
        }
    }
    match r {
        "w" => Some(format!("{prefix}.branch2.{conv}.weight")),
        _ => Some(format!(
            "{prefix}.branch2.{conv}_bn.{}",
            bn_field(r.strip_prefix("bn_")?)?
        )),
    }
}

/// A non-local block's blob after `nonlocal_conv`: `S_B_{theta,phi,g,out}_{w,b}` or
/// `S_B_bn_{s,b,rm,riv}`, as `sS.pathway0_nonlocalB.*` (PySlowFast's Caffe2 non-local blocks
/// are all on pathway 0).
fn caffe2_nonlocal(r: &str) -> Option<String> {
    let (stage, r) = number(r)?;
    let (block, r) = number(r)?;
    let prefix = format!("s{stage}.pathway0_nonlocal{block}");
    if let Some(f) = r.strip_prefix("bn_") {
        return Some(format!("{prefix}.bn.{}", bn_field(f)?));
    }
    let (conv, f) = r.rsplit_once('_')?;
    if !matches!(conv, "theta" | "phi" | "g" | "out") {
        return None;
    }
    let field = match f {
        "w" => "weight",
        "b" => "bias",
        _ => return None,
    };
    Some(format!("{prefix}.conv_{conv}.{field}"))
}

/// Our name for a tensor of torchvision's 2D ResNet (`bottleneck`: ResNet-50 and deeper, whose
/// blocks have three convolutions; else basic blocks of two), on pathway 0 (SlowFast's slow
/// pathway, a single-pathway model's only one; names are shared by every arch): `conv1` /
/// `bn1` the stem, `layerK.M` block M of our stage K + 1, `convN` / `bnN` the block's
/// convolutions in order, `downsample.0` / `.1` its shortcut, `fc` the classifier. None for
/// anything else, `num_batches_tracked` included.
pub fn torchvision_name(name: &str, bottleneck: bool) -> Option<String> {
    let (module, field) = name.rsplit_once('.')?;
    let bn = |f: &str| {
        matches!(f, "weight" | "bias" | "running_mean" | "running_var").then(|| f.to_string())
    };
    match module {
        "conv1" if field == "weight" => return Some("s1.pathway0_stem.conv.weight".into()),
        "bn1" => return Some(format!("s1.pathway0_stem.bn.{}", bn(field)?)),
        "fc" if matches!(field, "weight" | "bias") => {
            return Some(format!("head.projection.{field}"))
        }
        _ => {}
    }
    let mut parts = module.splitn(3, '.');
    let layer: u32 = parts.next()?.strip_prefix("layer")?.parse().ok()?;
    let block: u32 = parts.next()?.parse().ok()?;
    let inner = parts.next()?;
    if !(1..=4).contains(&layer) {
        return None;
    }
    let prefix = format!("s{}.pathway0_res{block}", layer + 1);
    let letter = |n: &str| -> Option<char> {
        let n: u32 = n.parse().ok()?;
        let count = if bottleneck { 3 } else { 2 };
        (1..=count)
            .contains(&n)
            .then(|| (b'a' + (n - 1) as u8) as char)
    };
    match inner {
        "downsample.0" if field == "weight" => Some(format!("{prefix}.branch1.weight")),
        "downsample.1" => Some(format!("{prefix}.branch1_bn.{}", bn(field)?)),
        _ => {
            if let Some(n) = inner.strip_prefix("conv") {
                let c = letter(n)?;
                (field == "weight").then(|| format!("{prefix}.branch2.{c}.weight"))
            } else {
                let n = inner.strip_prefix("bn")?;
                Some(format!("{prefix}.branch2.{}_bn.{}", letter(n)?, bn(field)?))
            }
        }
    }
}

/// A 2D kernel `[O, I, H, W]` inflated to the 3D shape `[O, I', T, H, W]` as PySlowFast's
/// `inflate_weight`: repeated over the T temporal positions and divided by T. When I' > I (a
/// slow-pathway block that also reads the fast pathway's lateral channels, which follow the
/// slow pathway's own), the extra input channels start at zero. None when the shapes do not
/// fit.
pub fn inflate(v2d: &Tensor, shape: &[i64]) -> Result<Option<Tensor>> {
    let s = v2d.size();
    if s.len() != 4
        || shape.len() != 5
        || s[0] != shape[0]
        || s[1] > shape[1]
        || s[2..] != shape[3..]
        || shape[2] < 1
    {
        return Ok(None);
    }
    let t = shape[2];
    let v = v2d
        .f_unsqueeze(2)?
        .f_repeat([1, 1, t, 1, 1])?
        .f_div(&crate::model::scalar(t as f64)?.f_to_kind(v2d.kind())?)?;
    if s[1] == shape[1] {
        return Ok(Some(v));
    }
    let out = Tensor::f_zeros(shape, (v2d.kind(), v2d.device()))?;
    out.f_narrow(1, 0, s[1])?.f_copy_(&v)?;
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caffe2_names() {
        for (blob, ours) in [
            ("conv1_w", "s1.pathway0_stem.conv.weight"),
            ("t_conv1_w", "s1.pathway1_stem.conv.weight"),
            ("res_conv1_bn_s", "s1.pathway0_stem.bn.weight"),
            ("t_res_conv1_bn_riv", "s1.pathway1_stem.bn.running_var"),
            ("t_pool1_subsample_w", "s1_fuse.conv_f2s.weight"),
            ("t_pool1_subsample_bn_rm", "s1_fuse.bn.running_mean"),
            (
                "t_res4_5_branch2c_bn_subsample_w",
                "s4_fuse.conv_f2s.weight",
            ),
            ("t_res2_2_branch2c_bn_subsample_bn_b", "s2_fuse.bn.bias"),
            ("res4_0_branch1_w", "s4.pathway0_res0.branch1.weight"),
            (
                "t_res3_0_branch1_bn_s",
                "s3.pathway1_res0.branch1_bn.weight",
            ),
            ("res5_2_branch2b_w", "s5.pathway0_res2.branch2.b.weight"),
            (
                "t_res3_1_branch2a_bn_riv",
                "s3.pathway1_res1.branch2.a_bn.running_var",
            ),
            ("res2_0_branch2c_bn_b", "s2.pathway0_res0.branch2.c_bn.bias"),
            ("pred_w", "head.projection.weight"),
            ("pred_b", "head.projection.bias"),
            ("res_conv1_w", "s1.pathway0_stem.conv.weight"),
            (
                "nonlocal_conv3_1_theta_w",
                "s3.pathway0_nonlocal1.conv_theta.weight",
            ),
            ("nonlocal_conv4_5_g_b", "s4.pathway0_nonlocal5.conv_g.bias"),
            (
                "nonlocal_conv4_3_out_w",
                "s4.pathway0_nonlocal3.conv_out.weight",
            ),
            (
                "nonlocal_conv3_3_phi_b",
                "s3.pathway0_nonlocal3.conv_phi.bias",
            ),
            (
                "nonlocal_conv4_5_bn_riv",
                "s4.pathway0_nonlocal5.bn.running_var",
            ),
            ("nonlocal_conv3_1_bn_s", "s3.pathway0_nonlocal1.bn.weight"),
        ] {
            assert_eq!(caffe2_name(blob).as_deref(), Some(ours), "{blob}");
        }
        for blob in [
            "nonlocal_conv3_1_theta_x",
            "nonlocal_conv3_1_psi_w",
            "nonlocal_conv3_bn_s",
            "t_nonlocal_conv3_1_theta_w",
            "res_conv1_bn_x",
            "res4_0_branch3_w",
            "t_pred_w",
            "conv5_w",
        ] {
            assert_eq!(caffe2_name(blob), None, "{blob}");
        }
        assert!(caffe2_solver_state("conv1_w_momentum") && caffe2_solver_state("lr"));
    }

    #[test]
    fn torchvision_names() {
        for (tv, ours, bottleneck) in [
            ("conv1.weight", "s1.pathway0_stem.conv.weight", true),
            ("bn1.running_var", "s1.pathway0_stem.bn.running_var", true),
            (
                "layer1.0.conv3.weight",
                "s2.pathway0_res0.branch2.c.weight",
                true,
            ),
            (
                "layer4.2.bn2.bias",
                "s5.pathway0_res2.branch2.b_bn.bias",
                true,
            ),
            (
                "layer2.0.downsample.0.weight",
                "s3.pathway0_res0.branch1.weight",
                false,
            ),
            (
                "layer3.0.downsample.1.running_mean",
                "s4.pathway0_res0.branch1_bn.running_mean",
                false,
            ),
            ("fc.weight", "head.projection.weight", false),
        ] {
            assert_eq!(
                torchvision_name(tv, bottleneck).as_deref(),
                Some(ours),
                "{tv}"
            );
        }
        for tv in [
            "layer1.0.conv3.weight",
            "bn1.num_batches_tracked",
            "layer5.0.conv1.weight",
        ] {
            assert_eq!(torchvision_name(tv, false), None, "{tv}");
        }
    }

    #[test]
    fn inflation_repeats_and_divides() {
        let w = Tensor::from_slice(&[1f32, 2., 3., 4., 5., 6.]).reshape([1, 2, 1, 3]);
        let v = inflate(&w, &[1, 3, 3, 1, 3]).unwrap().unwrap();
        assert_eq!(v.size(), [1, 3, 3, 1, 3]);
        for t in 0..3 {
            let slice = v.narrow(2, t, 1).squeeze_dim(2);
            assert!(slice
                .narrow(1, 0, 2)
                .allclose(&(&w / 3.0), 0.0, 1e-7, false));
            assert_eq!(
                slice
                    .narrow(1, 2, 1)
                    .abs()
                    .sum(tch::Kind::Float)
                    .double_value(&[]),
                0.0
            );
        }
        assert!(inflate(&w, &[2, 2, 3, 1, 3]).unwrap().is_none());
    }
}
