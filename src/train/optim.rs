//! SGD as PySlowFast configures it (momentum, dampening, Nesterov, weight decay on conv and FC
//! weights and biases, none on BN parameters), with its state keyed by parameter name, so a
//! checkpoint restores it whatever order the parameters come in.

use std::collections::BTreeMap;

use tch::{nn, Tensor};

use crate::error::{Error, Result};
use crate::schedule::SolverConfig;

pub struct Sgd {
    params: Vec<(String, Tensor, f64)>,
    momentum_buffers: BTreeMap<String, Tensor>,
    momentum: f64,
    dampening: f64,
    nesterov: bool,
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
        }
    }

    /// The defined gradients, for the fp16 loss scaler.
    pub fn grads(&self) -> Vec<Tensor> {
        self.params
            .iter()
            .map(|(_, p, _)| p.grad())
            .filter(Tensor::defined)
            .collect()
    }

    pub fn zero_grad(&mut self) {
        for (_, p, _) in &self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.f_zero_();
            }
        }
    }

    /// torch.optim.SGD's update with learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        tch::no_grad(|| {
            for (name, p, wd) in &self.params {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let mut d = if *wd != 0.0 {
                    &g + p * *wd
                } else {
                    g.shallow_clone()
                };
                if self.momentum != 0.0 {
                    let buf = match self.momentum_buffers.get_mut(name) {
                        Some(buf) => {
                            let _ = buf
                                .f_mul_scalar_(self.momentum)
                                .and_then(|mut b| b.f_add_(&(&d * (1.0 - self.dampening))));
                            buf.shallow_clone()
                        }
                        None => {
                            let buf = d.detach().copy();
                            self.momentum_buffers
                                .insert(name.clone(), buf.shallow_clone());
                            buf
                        }
                    };
                    d = if self.nesterov {
                        d + buf * self.momentum
                    } else {
                        buf
                    };
                }
                let _ = p.shallow_clone().f_sub_(&(d * lr));
            }
        });
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
