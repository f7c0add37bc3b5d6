//! The C ABI: a thin layer over the Rust API. Argument checks, panic catching, error text and
//! handle ownership live here; no logic of its own.
//!
//! Threading: handles may move between threads. Functions taking a `const` handle may run
//! concurrently on the same handle; the others need it to themselves, which the trainer's
//! entry points check (train.rs). The last error message is per thread.
#![allow(non_camel_case_types)]
// These are C entry points: their pointer contracts are documented in the header, and C callers
// cannot see a Rust `unsafe` marker anyway.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

pub mod collate;
pub mod data;
pub mod error;
pub mod plan;
pub mod schedule;
pub mod train;
mod versioned;

use std::ffi::{c_char, CStr};

pub use collate::*;
pub use data::*;
pub use error::*;
pub use plan::*;
pub use schedule::*;
pub use train::*;

/// Major version of this header; equals the crate version (tested).
pub const MG_VERSION_MAJOR: u32 = 0;
/// Minor version of this header.
pub const MG_VERSION_MINOR: u32 = 2;
/// Patch version of this header.
pub const MG_VERSION_PATCH: u32 = 0;

static VERSION: &CStr = {
    const TEXT: &str = concat!(
        "multigrid ",
        env!("CARGO_PKG_VERSION"),
        " (libtorch ",
        env!("MG_LIBTORCH_VERSION"),
        ", CUDA ",
        env!("MG_CUDA_TEXT"),
        ")\0"
    );
    match CStr::from_bytes_with_nul(TEXT.as_bytes()) {
        Ok(s) => s,
        Err(_) => panic!("version text has an interior NUL"),
    }
};

/// The library version with the libtorch it was built against and whether CUDA is linked,
/// e.g. "multigrid 0.2.0 (libtorch 2.11.0+cu130, CUDA linked)". Static; never free it.
#[no_mangle]
pub extern "C" fn mg_version() -> *const c_char {
    VERSION.as_ptr()
}
