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

/// GPUs the NVIDIA driver exposes to this process (`/dev/nvidiaN`, or the driver's list in
/// /proc when the device files are not visible): 0 on a machine without one.
fn driver_gpus() -> usize {
    let count = |dir: &str, keep: &dyn Fn(&str) -> bool| {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| keep(&e.file_name().to_string_lossy()))
                .count()
        })
    };
    let devices = count("/dev", &|name| {
        name.strip_prefix("nvidia")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    });
    devices.max(count("/proc/driver/nvidia/gpus", &|_| true))
}

/// CUDA as the build reports it is CUDA as this process has it. `mg_version` and `multigrid
/// build-info` say "linked" exactly when libtorch_cuda is loaded (build.rs links it with
/// --no-as-needed; without that the linker drops it and CUDA is never detected, tch-rs #177);
/// libtorch reports a device exactly when it says CUDA is available; CUDA is never available
/// in a build without it; and where the driver exposes GPUs to a build with CUDA, libtorch
/// finds them (unless CUDA_VISIBLE_DEVICES hides them).
#[test]
fn cuda_detection_agrees_with_the_build_and_the_machine() {
    // SAFETY: mg_version returns a static NUL-terminated string.
    let version = unsafe { std::ffi::CStr::from_ptr(multigrid::ffi::mg_version()) }
        .to_str()
        .unwrap()
        .to_owned();
    let linked = version.ends_with(", CUDA linked)");
    assert!(
        linked || version.ends_with(", CUDA not linked)"),
        "{version}"
    );
    let info = std::process::Command::new(env!("CARGO_BIN_EXE_multigrid"))
        .arg("build-info")
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout).into_owned();
    let want = if linked {
        "cuda linked"
    } else {
        "cuda not linked"
    };
    assert!(
        info.lines().any(|l| l == want),
        "mg_version says {version:?}, build-info says:\n{info}"
    );
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert_eq!(
        maps.contains("/libtorch_cuda.so"),
        linked,
        "{version}, but libtorch_cuda.so is{} loaded in this process",
        if linked { " not" } else { "" }
    );

    let available = tch::Cuda::is_available();
    let count = tch::Cuda::device_count();
    assert_eq!(
        available,
        count > 0,
        "is_available {available} with {count} devices"
    );
    if !linked {
        assert!(
            !available,
            "CUDA available in a build without libtorch_cuda"
        );
    }
    let gpus = driver_gpus();
    let hidden = std::env::var("CUDA_VISIBLE_DEVICES").is_ok();
    assert!(
        available || !linked || gpus == 0 || hidden,
        "the driver exposes {gpus} GPU(s) and libtorch_cuda is linked, but libtorch finds none: \
         is the driver older than this libtorch's CUDA? ({version})"
    );
}
