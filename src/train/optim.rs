//! SGD as PySlowFast configures it (momentum, dampening, Nesterov, weight decay on conv and FC
//! weights and biases, none on BN parameters), with its state keyed by parameter name, so a
//! checkpoint restores it whatever order the parameters come in.
//!
//! The update runs as PyTorch's multi-tensor kernels (torch.optim.SGD with foreach=True, its
//! default on CUDA): a handful of kernels per weight-decay group over all parameters, where a
//! loop over R50's parameters launches a few kernels for each of them. On CUDA,
//! [`Sgd::set_fused`] switches to its fused kernel (fused=True). Both go through the C++ bridge,
//! since tch exposes neither.

use std::collections::BTreeMap;
use std::ffi::c_int;

use tch::{nn, Tensor};
use torch_sys::C_tensor;

use crate::bridge::{self, mgb_sgd_step};
use crate::error::{Error, Result};
use crate::schedule::SolverConfig;

/// A learning rate: a value, or a 0-dim f32 tensor on the parameters' device.
#[derive(Clone, Copy)]
pub enum Lr<'a> {
    Value(f64),
    Device(&'a Tensor),
}

pub struct Sgd {
    params: Vec<(String, Tensor, f64)>,
    momentum_buffers: BTreeMap<String, Tensor>,
    momentum: f64,
    dampening: f64,
    nesterov: bool,
    fused: bool,
}

/// BN parameters are `..._bn.weight`, `....bn.bias`: no weight decay for them (BN.WEIGHT_DECAY 0).
fn is_bn(name: &str) -> bool {
    name.rsplit('.')
        .nth(1)
        .is_some_and(|m| m == "bn" || m.ends_with("_bn"))
}

impl Sgd {
    pub fn new(vs: &nn::VarStore, solver: &SolverConfig) -> Sgd {
        let mut params: Vec<(String, Tensor, f64)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(name, t)| {
                let wd = if is_bn(&name) {
                    0.0
                } else {
                    solver.weight_decay
                };
                (name, t, wd)
            })
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        Sgd {
            params,
            momentum_buffers: BTreeMap::new(),
            momentum: solver.momentum,
            dampening: solver.dampening,
            nesterov: solver.nesterov,
            fused: false,
        }
    }

    /// PyTorch's fused SGD kernel (torch.optim.SGD(fused=True)) instead of the multi-tensor
    /// ones; it needs every parameter on CUDA, else the step is an error naming the kernel.
    pub fn set_fused(&mut self, fused: bool) {
        self.fused = fused;
    }

    /// The defined gradients, for the fp16 loss scaler.
    pub fn grads(&self) -> Result<Vec<Tensor>> {
        let mut out = Vec::with_capacity(self.params.len());
        for (_, p, _) in &self.params {
            let g = p.f_grad()?;
            if g.defined() {
                out.push(g);
            }
        }
        Ok(out)
    }

    /// Zeroes every defined gradient in place (their storage, and any view of it, is kept).
    pub fn zero_grad(&mut self) -> Result<()> {
        for (_, p, _) in &self.params {
            let mut g = p.f_grad()?;
            if g.defined() {
                let _ = g.f_zero_()?;
            }
        }
        Ok(())
    }

    /// torch.optim.SGD's update with learning rate `lr`, over the parameters that have a
    /// gradient; a parameter's first update sets its momentum buffer, as torch's clone does.
    pub fn step(&mut self, lr: f64) -> Result<()> {
        self.step_with(Lr::Value(lr))
    }

    /// [`Sgd::step`] with the learning rate given as a value, or read on the device from a
    /// 0-dim f32 tensor there (what a captured CUDA graph needs: the value at replay).
    pub fn step_with(&mut self, lr: Lr) -> Result<()> {
        let momentum = self.momentum != 0.0;
        // (weight decay, first step) -> (params, grads, buffers): one kernel launch each.
        type Lists = (Vec<Tensor>, Vec<Tensor>, Vec<Tensor>);
        let mut groups: Vec<((u64, bool), Lists)> = Vec::new();
        for (name, p, wd) in &self.params {
            let g = p.f_grad()?;
            if !g.defined() {
                continue;
            }
            let (buf, first) = match self.momentum_buffers.get(name) {
                Some(b) if momentum => (b.shallow_clone(), false),
                None if momentum => {
                    // In the parameter's layout (channels-last stays channels-last).
                    let b = tch::no_grad(|| p.f_zeros_like())?;
                    self.momentum_buffers
                        .insert(name.clone(), b.shallow_clone());
                    (b, true)
                }
                _ => (Tensor::new(), false),
            };
            let key = (wd.to_bits(), first);
            let at = match groups.iter().position(|(k, _)| *k == key) {
                Some(at) => at,
                None => {
                    groups.push((key, Default::default()));
                    groups.len() - 1
                }
            };
            let lists = &mut groups[at].1;
            lists.0.push(p.shallow_clone());
            lists.1.push(g);
            lists.2.push(buf);
        }
        let (lr, lr_t) = match lr {
            Lr::Value(v) => (v, std::ptr::null()),
            Lr::Device(t) => (f64::NAN, t.as_ptr()),
        };
        for ((wd, first), (params, grads, bufs)) in &groups {
            let ptrs =
                |v: &[Tensor]| -> Vec<*const C_tensor> { v.iter().map(|t| t.as_ptr()).collect() };
            let (p, g, b) = (ptrs(params), ptrs(grads), ptrs(bufs));
            let fused = self.fused;
            bridge::call(if fused { "fused SGD" } else { "SGD" }, |e, l| {
                // SAFETY: p, g and b hold params.len() live tensor handles each (b's undefined
                // when momentum is 0, which the bridge then does not read); lr_t is null or a
                // live handle; the tensors outlive the call.
                unsafe {
                    mgb_sgd_step(
                        p.as_ptr(),
                        g.as_ptr(),
                        b.as_ptr(),
                        p.len(),
                        lr,
                        lr_t,
                        f64::from_bits(*wd),
                        self.momentum,
                        self.dampening,
                        c_int::from(self.nesterov),
                        c_int::from(*first),
                        c_int::from(fused),
                        e,
                        l,
                    )
                }
            })?;
        }
        Ok(())
    }

    /// Momentum buffers by parameter name, for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.momentum_buffers
            .iter()
            .map(|(k, v)| (k.clone(), v.shallow_clone()))
            .collect()
    }

    pub fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<()> {
        let known: std::collections::HashSet<&str> =
            self.params.iter().map(|p| p.0.as_str()).collect();
        let mut buffers = BTreeMap::new();
        for (name, t) in state {
            if !known.contains(name.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "optimizer state names unknown parameter {name}"
                )));
            }
            buffers.insert(name, t);
        }
        self.momentum_buffers = buffers;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bn_parameters_are_recognised() {
        assert!(super::is_bn("s1.pathway0_stem.bn.weight"));
        assert!(super::is_bn("s2.pathway0_res0.branch2.a_bn.bias"));
        assert!(super::is_bn("s2.pathway0_res0.branch1_bn.weight"));
        assert!(!super::is_bn("s2.pathway0_res0.branch1.weight"));
        assert!(!super::is_bn("head.projection.bias"));
    }
}
