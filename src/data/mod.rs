//! Datasets: PySlowFast's video lists (decoded with FFmpeg), the clip store of decoded frames,
//! the frame store of JPEG frames, the synthetic action dataset (in Kinetics', Charades' and
//! SSv2's layouts); and the loader that prepares the plan's next batches in the background.

pub mod assemble;
pub mod dataset;
pub mod frame_list;
pub mod frame_list_gen;
pub mod frame_store;
pub mod loader;
pub mod resize;
pub mod store;
mod store_file;
pub mod synthetic;
pub mod synthetic_hard;
pub mod synthetic_kinetics;
#[cfg(feature = "video")]
pub mod video;

pub use assemble::{Assembly, Failures, Labels};
pub use dataset::{Batch, Dataset};
pub use frame_store::{FrameStore, FrameStoreWriter};
pub use loader::{Loader, LoaderOptions, LoaderStats};
pub use store::{ClipStore, StoreWriter};
pub use synthetic_kinetics::{KineticsOptions, Task};
