//! Gradients as views into a few flat buffers, DDP's `gradient_as_bucket_view`: each
//! parameter's `.grad` is a slice of one bucket, laid out with the parameter's own strides
//! (channels-last stays channels-last, so autograd's gradient layout contract holds), and
//! autograd accumulates into it in place. A bucket is then all-reduced as it is: no
//! concatenation before the collective and no copy back after it.
//!
//! Buckets follow the order backward produces gradients, the reverse of the order the model
//! creates its parameters (as DDP's first bucket assignment), in DDP's sizes: the first small
//! so that a collective can start early.

use std::collections::HashMap;

use tch::{nn, Tensor};

use crate::bridge::{self, mgb_set_grad};
use crate::distributed as dist;
use crate::error::{Error, Result};

pub struct GradBuckets {
    /// One flat buffer per bucket.
    flat: Vec<Tensor>,
    /// The parameters of each bucket, by name, in buffer order.
    names: Vec<Vec<String>>,
}

impl GradBuckets {
    /// Gives every trainable parameter of `vs` a gradient (zeros) that is a view into a bucket
    /// of about `first_bytes` (the first) or `bytes` (the others).
    pub fn new(vs: &nn::VarStore, first_bytes: usize, bytes: usize) -> Result<GradBuckets> {
        let params = backward_order(vs);
        let Some((_, first)) = params.first() else {
            return Ok(GradBuckets {
                flat: Vec::new(),
                names: Vec::new(),
            });
        };
        let (kind, device) = (first.kind(), first.device());
        if let Some((name, p)) = params.iter().find(|(_, p)| p.kind() != kind) {
            return Err(Error::InvalidArgument(format!(
                "parameter {name} is {:?} where the others are {kind:?}: gradient buckets need one kind",
                p.kind()
            )));
        }
        let sizes: Vec<usize> = params.iter().map(|(_, p)| p.numel()).collect();
        let mut flat = Vec::new();
        let mut names = Vec::new();
        for range in dist::buckets(&sizes, kind.elt_size_in_bytes(), first_bytes, bytes) {
            let total: usize = sizes[range.clone()].iter().sum();
            let buffer = Tensor::f_zeros([total as i64], (kind, device))?;
            let mut offset = 0i64;
            for (name, p) in &params[range.clone()] {
                let view = buffer.f_as_strided(p.size(), dense_strides(p), Some(offset))?;
                set_grad(p, &view).map_err(|e| match e {
                    Error::Torch(m) => Error::Torch(format!("the gradient of {name}: {m}")),
                    other => other,
                })?;
                offset += p.numel() as i64;
            }
            names.push(params[range].iter().map(|(n, _)| n.clone()).collect());
            flat.push(buffer);
        }
        Ok(GradBuckets { flat, names })
    }

    /// The buckets, each holding its parameters' gradients.
    pub fn flat(&self) -> &[Tensor] {
        &self.flat
    }

    /// The parameters of each bucket, by name.
    pub fn names(&self) -> &[Vec<String>] {
        &self.names
    }

    /// Every bucket divided by `world` then summed over ranks, in place: the mean over ranks of
    /// every gradient, with f16 and f32 kept in range as DDP's pre-division does.
    pub fn all_reduce_mean(&self, comm: &mut dyn dist::Collective) -> Result<()> {
        let world = comm.world_size();
        if world == 1 || self.flat.is_empty() {
            return Ok(());
        }
        // A 0-dim tensor, not a scalar: tch's scalar overloads panic on a libtorch error.
        let world_t = crate::model::scalar(world as f64)?;
        tch::no_grad(|| -> Result<()> {
            for b in &self.flat {
                let _ = b.shallow_clone().f_div_(&world_t)?;
            }
            Ok(())
        })?;
        comm.all_reduce_sum(&self.flat)
    }
}

/// Trainable parameters with their names, in the reverse of the order the model created them:
/// the order backward produces their gradients. (The var store keeps creation order for
/// trainable tensors only; names come from its name map.)
fn backward_order(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let names: HashMap<usize, String> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (t.data_ptr() as usize, n))
        .collect();
    vs.trainable_variables()
        .into_iter()
        .rev()
        .filter(Tensor::requires_grad)
        .filter_map(|t| names.get(&(t.data_ptr() as usize)).map(|n| (n.clone(), t)))
        .collect()
}

/// `p`'s strides when they cover exactly its elements (contiguous, channels-last or any other
/// dense permutation), so the gradient shares its layout; else the contiguous ones.
fn dense_strides(p: &Tensor) -> Vec<i64> {
    let (size, stride) = (p.size(), p.stride());
    let extent: i64 = size
        .iter()
        .zip(&stride)
        .map(|(&n, &s)| (n - 1) * s)
        .sum::<i64>()
        + 1;
    let mut order: Vec<usize> = (0..size.len()).collect();
    order.sort_by_key(|&i| stride[i]);
    // Dense: sorted by stride, each stride is the product of the sizes below it.
    let mut expected = 1;
    let dense = extent == p.numel() as i64
        && order.iter().all(|&i| {
            let ok = size[i] == 1 || stride[i] == expected;
            expected *= size[i];
            ok
        });
    if dense {
        return stride;
    }
    let mut contiguous = vec![1i64; size.len()];
    for i in (0..size.len().saturating_sub(1)).rev() {
        contiguous[i] = contiguous[i + 1] * size[i + 1];
    }
    contiguous
}

fn set_grad(p: &Tensor, grad: &Tensor) -> Result<()> {
    bridge::call("set a gradient", |e, l| {
        // SAFETY: both handles are live tensors for the whole call; the bridge only reads them.
        unsafe { mgb_set_grad(p.as_ptr(), grad.as_ptr(), e, l) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn gradients_accumulate_into_their_bucket_in_the_parameters_layout() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let root = vs.root();
        let a = root.var("a", &[2, 3], nn::Init::Const(1.0));
        // Channels-last: strides (C*D*H*W... ) of a permuted dense tensor.
        let w = root.var("w", &[4, 3, 2, 2, 2], nn::Init::Const(1.0));
        let w_cl = tch::no_grad(|| crate::model::channels_last_3d(&w).unwrap());
        tch::no_grad(|| w.shallow_clone().set_data(&w_cl));
        assert!(crate::model::is_channels_last_3d(&w));
        let b = root.var("b", &[5], nn::Init::Const(1.0));
        // 4-byte elements, buckets of 8 bytes: a alone, then w and b.
        let buckets = GradBuckets::new(&vs, 8, 16).unwrap();
        assert_eq!(
            buckets.names(),
            &[vec!["b".to_string()], vec!["w".into()], vec!["a".into()]]
        );
        assert_eq!(
            w.grad().stride(),
            w.stride(),
            "the gradient keeps the layout"
        );
        let loss = (&a * 2.0).sum(Kind::Float) + (&w * 3.0).sum(Kind::Float) + b.sum(Kind::Float);
        loss.backward();
        let total: f64 = buckets
            .flat()
            .iter()
            .map(|f| f.sum(Kind::Double).double_value(&[]))
            .sum();
        assert_eq!(
            total,
            6.0 * 2.0 + 96.0 * 3.0 + 5.0,
            "every gradient in a bucket"
        );
        assert_eq!(a.grad().sum(Kind::Double).double_value(&[]), 12.0);
        // A second backward accumulates, still in the bucket.
        loss.backward();
        let w_sum = buckets.flat()[1].sum(Kind::Double).double_value(&[]);
        assert_eq!(w_sum, 2.0 * 96.0 * 3.0);
    }

    #[test]
    fn strides_of_dense_layouts_are_kept_and_others_replaced() {
        let t = Tensor::zeros([2, 3, 4], (Kind::Float, tch::Device::Cpu));
        assert_eq!(dense_strides(&t), vec![12, 4, 1]);
        let p = t.permute([2, 0, 1]);
        assert_eq!(dense_strides(&p), p.stride());
        let sliced = t.narrow(2, 0, 2);
        assert_eq!(dense_strides(&sliced), vec![6, 2, 1]);
    }
}
