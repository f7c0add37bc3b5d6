//! The default build links libtorch: a conv3d forward and backward on the CPU.
#![cfg(feature = "torch")]

use tch::{nn, nn::Module, Device, Kind, Tensor};

#[test]
fn conv3d_forward_and_backward_on_cpu() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let conv = nn::conv3d(
        &vs.root() / "conv",
        3,
        4,
        3,
        nn::ConvConfigND {
            padding: 1,
            ..Default::default()
        },
    );
    let x = Tensor::randn([2, 3, 4, 8, 8], (Kind::Float, Device::Cpu));
    let y = conv.forward(&x);
    assert_eq!(y.size(), [2, 4, 4, 8, 8]);
    let loss = y.square().mean(Kind::Float);
    loss.backward();
    let grad = vs.variables()["conv.weight"].grad();
    assert_eq!(grad.size(), [4, 3, 3, 3, 3]);
    let norm = grad.norm().double_value(&[]);
    assert!(norm.is_finite() && norm > 0.0, "{norm}");
}

#[test]
fn cuda_probe_does_not_crash() {
    // On a machine without a GPU this is false; with one, libtorch_cuda must be linked for it
    // to be true (build.rs).
    let _ = tch::Cuda::is_available();
    let _ = tch::Cuda::device_count();
}
