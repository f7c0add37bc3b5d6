//! `multigrid build-info`: how this build was made, one `key value` line each.

pub fn run() -> Result<(), String> {
    println!("version {}", env!("CARGO_PKG_VERSION"));
    println!("libtorch {}", env!("MG_LIBTORCH_VERSION"));
    println!("cuda {}", env!("MG_CUDA_TEXT"));
    println!("nccl {}", env!("MG_NCCL_TEXT"));
    let mpi = if cfg!(feature = "mpi") {
        "linked"
    } else {
        "not built"
    };
    println!("mpi {mpi}");
    println!("static_libs {}", env!("MG_STATIC_LIBS"));
    Ok(())
}
