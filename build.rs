//! Link-time facts that the source cannot know: where libtorch lives, whether it has CUDA.
//!
//! Without an rpath, binaries and libmultigrid.so need LD_LIBRARY_PATH to start; without
//! `--no-as-needed -ltorch_cuda`, the linker drops libtorch_cuda (nothing references it
//! directly) and CUDA is silently never detected (tch-rs #177, #907, #980).
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
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
        return;
    }
    let lib_dir = match std::env::var_os("DEP_TCH_LIBTORCH_LIB") {
        Some(dir) => PathBuf::from(dir),
        None => panic!("torch-sys did not report DEP_TCH_LIBTORCH_LIB; is LIBTORCH set?"),
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    let has_cuda = lib_dir.join("libtorch_cuda.so").exists();
    if has_cuda {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    let dir = lib_dir.display();
    static_libs.push(format!("-L{dir} -Wl,-rpath,{dir}"));
    if has_cuda {
        static_libs.push("-Wl,--no-as-needed -ltorch_cuda -Wl,--as-needed".into());
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
