//! A libtorch failure inside a training step comes back as `Error::Torch` with libtorch's own
//! message, never as a panic: through the C API a panic reads as MG_STATUS_PANIC ("a bug in this
//! library"), where an out-of-memory or a bad tensor is MG_STATUS_TORCH, the caller's to handle.
#![cfg(feature = "torch")]

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use common::tiny_model as tiny;
use multigrid::model::bn::{Bn, GroupBatchNorm, SyncStats};
use multigrid::model::SlowFast;
use multigrid::train::amp::LossScaler;
use multigrid::Error;
use tch::{nn, Device, Kind, Tensor};

/// Runs `f`, failing the test with its message if it panics.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{what} panicked instead of returning Error::Torch: {msg}")
        }
    }
}

/// The libtorch message of an `Error::Torch`; any other outcome fails the test.
fn torch_message<T: std::fmt::Debug>(r: multigrid::Result<T>) -> String {
    match r {
        Err(Error::Torch(m)) => m,
        other => panic!("expected Error::Torch, got {other:?}"),
    }
}

/// A collective that reduces only the first half of what it is given, as one that lost part
/// of its buffer would: sync BN then has means and no mean squares, which libtorch refuses to
/// cut out (a deterministic libtorch error in the middle of a forward pass).
struct HalfReduce;

impl SyncStats for HalfReduce {
    fn ranks(&self) -> usize {
        2
    }
    fn all_reduce_mean(&self, x: &Tensor) -> multigrid::Result<Tensor> {
        Ok(x.f_narrow(0, 0, x.size()[0] / 2)?)
    }
}

#[test]
fn sync_bn_failure_in_a_training_forward_is_a_torch_error() {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = SlowFast::new(&vs.root(), &tiny()).unwrap();
    let slow = Tensor::randn([2, 3, 2, 32, 32], (Kind::Float, Device::Cpu));
    let fast = Tensor::randn([2, 3, 8, 32, 32], (Kind::Float, Device::Cpu));
    let bn = Bn {
        groups: 1,
        sync: Some(&HalfReduce),
    };
    let r = no_panic("a sync-BN training forward", || {
        model.forward_bn(&slow, &fast, bn, true)
    });
    let msg = torch_message(r);
    // libtorch's own words for the out-of-range narrow, not a paraphrase of ours.
    assert!(msg.contains("exceeds dimension size"), "{msg}");
    // The failure left the model usable: a plain training forward still runs.
    let logits = model.forward(&slow, &fast, 1, true).unwrap();
    assert_eq!(logits.size(), [2, 12]);
}

#[test]
fn sync_bn_failure_in_one_layer_is_a_torch_error() {
    let vs = nn::VarStore::new(Device::Cpu);
    let layer = GroupBatchNorm::new(&vs.root(), 4, false).unwrap();
    let x = Tensor::randn([3, 4, 2, 5, 5], (Kind::Float, Device::Cpu));
    let bn = Bn {
        groups: 1,
        sync: Some(&HalfReduce),
    };
    let r = no_panic("GroupBatchNorm::forward with sync BN", || {
        layer.forward(&x, bn, true)
    });
    torch_message(r);
    // Running statistics are untouched by the failed pass.
    assert_eq!(
        Vec::<f32>::try_from(&layer.running_mean).unwrap(),
        vec![0.0; 4]
    );
}

#[test]
fn unscale_reports_a_failed_multiply() {
    // An integer gradient cannot be divided by the scale in place: libtorch refuses, and the
    // scaler must say so rather than step with gradients 65536 times too large.
    let g = Tensor::from_slice(&[65536i64, 131072]);
    let r = no_panic("LossScaler::unscale", || {
        LossScaler::default().unscale(&[g])
    });
    let msg = torch_message(r);
    assert!(msg.contains("can't be cast"), "{msg}");
}

#[test]
fn unscale_of_an_undefined_gradient_is_a_torch_error() {
    let r = no_panic("LossScaler::unscale", || {
        LossScaler::default().unscale(&[Tensor::from_slice(&[1.0f32]), Tensor::new()])
    });
    torch_message(r);
}

/// The constants of the fallible arithmetic are 0-dim CPU tensors, which CUDA ops take as
/// scalars: the BN statistics and the scaler come out the same on a GPU as on the CPU. Runs
/// where CUDA is (scripts' GPU checks); passes with a note elsewhere.
#[test]
fn cpu_constants_work_on_cuda_tensors() {
    if !tch::Cuda::is_available() {
        eprintln!("no CUDA: nothing to compare");
        return;
    }
    struct Same;
    impl SyncStats for Same {
        fn ranks(&self) -> usize {
            1
        }
        fn all_reduce_mean(&self, x: &Tensor) -> multigrid::Result<Tensor> {
            Ok(x.shallow_clone())
        }
    }
    let x = Tensor::randn([4, 3, 2, 5, 5], (Kind::Float, Device::Cpu));
    let stats = |device: Device| -> Vec<f32> {
        let vs = nn::VarStore::new(device);
        let layer = GroupBatchNorm::new(&vs.root(), 3, false).unwrap();
        let x = x.to_device(device);
        let _ = layer.forward(&x, Bn::groups(2), true).unwrap();
        let sync = Bn {
            groups: 1,
            sync: Some(&Same),
        };
        let _ = layer.forward(&x, sync, true).unwrap();
        layer.start_precise();
        let _ = tch::no_grad(|| layer.forward(&x, Bn::groups(2), true)).unwrap();
        layer.finish_precise().unwrap();
        let mut out = Vec::<f32>::try_from(layer.running_mean.to_device(Device::Cpu)).unwrap();
        out.extend(Vec::<f32>::try_from(layer.running_var.to_device(Device::Cpu)).unwrap());
        layer.reset_running_stats().unwrap();
        out.extend(Vec::<f32>::try_from(layer.running_var.to_device(Device::Cpu)).unwrap());
        out
    };
    let (cpu, gpu) = (stats(Device::Cpu), stats(Device::Cuda(0)));
    for (a, b) in cpu.iter().zip(&gpu) {
        assert!(
            (a - b).abs() <= 1e-4 * a.abs().max(1.0),
            "{cpu:?} vs {gpu:?}"
        );
    }
    let g = Tensor::from_slice(&[65536.0f32, -131072.0]).to_device(Device::Cuda(0));
    let scaler = LossScaler::default();
    assert!(scaler.unscale(std::slice::from_ref(&g)).unwrap());
    let back = Vec::<f32>::try_from(g.to_device(Device::Cpu)).unwrap();
    assert_eq!(back, vec![1.0, -2.0]);
    let loss = scaler.f_scale_loss(&g).unwrap();
    assert_eq!(
        Vec::<f32>::try_from(loss.to_device(Device::Cpu)).unwrap(),
        vec![65536.0, -131072.0]
    );
}
