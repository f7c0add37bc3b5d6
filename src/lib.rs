//! Multigrid training of video models (Wu, Girshick, He, Feichtenhofer, Krähenbühl, CVPR 2020)
//! as a library and a C-ABI plugin.
//!
//! Data flows one way: [`schedule::Schedule`] (a pure function of the config) ->
//! [`plan::Plan`] (adds dataset size, world size, rank and seed; answers any step) -> the
//! collator and the trainer. [`ffi`] is the C API over the same types.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

/// cbindgen:ignore
#[cfg(feature = "torch")]
mod bridge;
pub mod collate;
pub mod data;
#[cfg(feature = "torch")]
pub mod distributed;
pub mod error;
pub mod ffi;
#[cfg(feature = "torch")]
pub mod model;
pub mod plan;
pub mod schedule;
#[cfg(feature = "torch")]
pub mod train;

pub use error::{Error, Result};
pub use plan::{Plan, Step};
pub use schedule::{Config, Mode, Schedule, Stage};
