//! Link-time facts that the source cannot know: where libtorch lives, whether it has CUDA.
//!
//! Without an rpath, binaries and libmultigrid.so need LD_LIBRARY_PATH to start; without
//! `--no-as-needed -ltorch_cuda`, the linker drops libtorch_cuda (nothing references it
//! directly) and CUDA is silently never detected (tch-rs #177, #907, #980).
//!
//! It also compiles src/bridge/bridge.cpp, the one C++ bridge into libtorch's C++ API: c10d's
//! stores, autocast and the optimizer kernels always (cfg `mg_c10d`), ProcessGroupNCCL too when
//! libtorch has CUDA and the NCCL/CUDA headers are found (cfg `mg_nccl`).
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=MG_CUDA_INCLUDE");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-env-changed=NCCL_INCLUDE_DIR");
    println!("cargo:rerun-if-changed=src/bridge/bridge.cpp");
    println!("cargo::rustc-check-cfg=cfg(mg_c10d)");
    println!("cargo::rustc-check-cfg=cfg(mg_nccl)");
    // The SONAME carries the major version, so an incompatible release is a different library
    // to the dynamic loader; `make install` adds the libmultigrid.so.MAJOR link.
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap();
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmultigrid.so.{major}");
    // What a program linking libmultigrid.a needs after it (pkg-config's Libs.private and the
    // CMake static target); `tests/install.rs` links examples/c/schedule.c with it.
    let mut static_libs: Vec<String> = Vec::new();
    if std::env::var_os("CARGO_FEATURE_VIDEO").is_some() {
        static_libs.extend(["-lavformat", "-lavcodec", "-lswscale", "-lavutil"].map(String::from));
    }
    let rust_std = "-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc";
    if std::env::var_os("CARGO_FEATURE_TORCH").is_none() {
        static_libs.push(rust_std.into());
        println!("cargo:rustc-env=MG_STATIC_LIBS={}", static_libs.join(" "));
        println!("cargo:rustc-env=MG_LIBTORCH_VERSION=none");
        println!("cargo:rustc-env=MG_CUDA_TEXT=not linked");
        println!("cargo:rustc-env=MG_NCCL_TEXT=not built");
        return;
    }
    let lib_dir = match std::env::var_os("DEP_TCH_LIBTORCH_LIB") {
        Some(dir) => PathBuf::from(dir),
        None => panic!("torch-sys did not report DEP_TCH_LIBTORCH_LIB; is LIBTORCH set?"),
    };
    // LIBTORCH is usually .venv/libtorch, a link to the wheel's torch directory
    // (.cargo/config.toml): resolve it, so the rpath names the wheel itself and the NVIDIA
    // wheels are found beside it (site-packages/nvidia), not beside the link.
    let lib_dir = std::fs::canonicalize(&lib_dir).unwrap_or(lib_dir);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    let has_cuda = lib_dir.join("libtorch_cuda.so").exists();
    if has_cuda {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    let nccl = build_bridge(&lib_dir, has_cuda);
    let dir = lib_dir.display();
    static_libs.push(format!("-L{dir} -Wl,-rpath,{dir}"));
    if nccl {
        static_libs.push("-Wl,--no-as-needed -ltorch_cuda -lc10_cuda -Wl,--as-needed".into());
    } else if has_cuda {
        static_libs.push("-Wl,--no-as-needed -ltorch_cuda -Wl,--as-needed".into());
    }
    if std::env::var_os("CARGO_FEATURE_MPI").is_some() {
        // The MPI backend (the `mpi` crate) needs the MPI library after libmultigrid.a.
        let mpi = std::process::Command::new("pkg-config")
            .args(["--libs", "ompi-c"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "-lmpi".into());
        static_libs.push(mpi);
    }
    static_libs.push(format!("-ltorch_cpu -ltorch -lc10 -lstdc++ {rust_std}"));
    println!("cargo:rustc-env=MG_STATIC_LIBS={}", static_libs.join(" "));
    let cuda = if has_cuda { "linked" } else { "not linked" };
    println!("cargo:rustc-env=MG_CUDA_TEXT={cuda}");
    println!(
        "cargo:rustc-env=MG_LIBTORCH_VERSION={}",
        libtorch_version(&lib_dir).unwrap_or_else(|| "unknown".into())
    );
}

/// Compiles src/bridge/bridge.cpp (one translation unit, about 20 s) into a static library that
/// the crate links. Returns whether the ProcessGroupNCCL part was built.
fn build_bridge(lib_dir: &Path, has_cuda: bool) -> bool {
    let root = lib_dir.parent().expect("libtorch lib dir has a parent");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .pic(true)
        .file("src/bridge/bridge.cpp")
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        // libtorch's headers are not warning-clean under -Wall -Wextra.
        .warnings(false);
    let headers = if has_cuda {
        nccl_include_dirs(root)
    } else {
        None
    };
    let nccl = headers.is_some();
    if let Some(dirs) = headers {
        for d in dirs {
            build.include(d);
        }
        build.define("USE_C10D_NCCL", None).define("MG_NCCL", None);
        // c10/cuda/CUDAEvent.h aligns to hardware_destructive_interference_size; gcc notes it.
        build.flag_if_supported("-Wno-interference-size");
    }
    build.compile("multigrid_bridge");
    println!("cargo:rustc-cfg=mg_c10d");
    // After the shim's archive, so the linker resolves its references in these libraries.
    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    if nccl {
        println!("cargo:rustc-cfg=mg_nccl");
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-lc10_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    let text = if nccl { "linked" } else { "not built" };
    println!("cargo:rustc-env=MG_NCCL_TEXT={text}");
    if has_cuda && !nccl {
        println!(
            "cargo:warning=libtorch has CUDA but nccl.h, cuda_runtime_api.h, crt/host_config.h or \
             nv/target was not found: building without the NCCL backend (run scripts/setup.sh, \
             or set MG_CUDA_INCLUDE to the folders that hold them, separated by ':')"
        );
    }
    nccl
}

/// The folders holding what ProcessGroupNCCL.hpp includes: nccl.h, the CUDA runtime headers,
/// crt/host_config.h and nv/target. Looked for in MG_CUDA_INCLUDE (':'-separated), the PyPI
/// wheels next to libtorch (site-packages/nvidia/{cu13,nccl}/include, from torch's
/// nvidia-nccl-cu13 and the set-up's nvidia-cuda-crt and nvidia-cuda-cccl), NCCL_INCLUDE_DIR,
/// CUDA_HOME/include and /usr/local/cuda/include. None unless all four are found.
fn nccl_include_dirs(libtorch: &Path) -> Option<Vec<PathBuf>> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(v) = std::env::var_os("MG_CUDA_INCLUDE") {
        candidates.extend(std::env::split_paths(&v));
    }
    if let Some(site) = libtorch.parent() {
        let nv = site.join("nvidia");
        for sub in [
            "cu13/include",
            "cu13/include/cccl",
            "nccl/include",
            "cu12/include",
        ] {
            candidates.push(nv.join(sub));
        }
    }
    if let Some(v) = std::env::var_os("NCCL_INCLUDE_DIR") {
        candidates.push(PathBuf::from(v));
    }
    if let Some(v) = std::env::var_os("CUDA_HOME") {
        candidates.push(PathBuf::from(v).join("include"));
    }
    candidates.push(PathBuf::from("/usr/local/cuda/include"));
    candidates.push(PathBuf::from("/usr/include"));
    let wanted = [
        "nccl.h",
        "cuda_runtime_api.h",
        "crt/host_config.h",
        "nv/target",
    ];
    let mut dirs: Vec<PathBuf> = Vec::new();
    for file in wanted {
        let dir = candidates.iter().find(|d| d.join(file).exists())?;
        if !dirs.contains(dir) {
            dirs.push(dir.clone());
        }
    }
    // /usr/include is on the default search path already; naming it would reorder it.
    dirs.retain(|d| d != Path::new("/usr/include"));
    Some(dirs)
}

/// libtorch writes its version in `build-version` (standalone zip) or `version.py` (wheel).
fn libtorch_version(lib_dir: &Path) -> Option<String> {
    let root = lib_dir.parent()?;
    if let Ok(v) = std::fs::read_to_string(root.join("build-version")) {
        return Some(v.trim().to_string());
    }
    let py = std::fs::read_to_string(root.join("version.py")).ok()?;
    let line = py.lines().find(|l| l.starts_with("__version__"))?;
    Some(line.split('\'').nth(1)?.to_string())
}
