//! PySlowFast's YAML configs as they are: `SLOWFAST_8x8_R50.yaml` with its `_BASE_` files and
//! trailing `KEY VALUE` options, read as PySlowFast's loader reads them ([`PySlowFastCfg`]) and
//! mapped onto our config ([`import`]); and ours written under PySlowFast's names
//! ([`to_pyslowfast`]). README, "PySlowFast configs", lists what becomes of each key.

mod load;
mod map;

use std::path::Path;

pub use load::{opts_from_args, PySlowFastCfg};
pub use map::{to_pyslowfast, Import};

use crate::error::Result;
use crate::schedule::Config;

/// Reads the PySlowFast YAML at `path` with the KEY VALUE `opts` over it (as
/// `tools/run_net.py --cfg path opts...`) and maps it onto our config.
pub fn import(path: impl AsRef<Path>, opts: &[(String, String)]) -> Result<Import> {
    PySlowFastCfg::load(path.as_ref(), opts)?.to_config()
}

impl Config {
    /// Our config for a PySlowFast YAML and its KEY VALUE options, with the warnings (one
    /// line each) to show; [`import`] also gives the world size, checkpoint and output
    /// directory the YAML names.
    pub fn from_pyslowfast_yaml(
        path: impl AsRef<Path>,
        opts: &[(String, String)],
    ) -> Result<(Config, Vec<String>)> {
        let i = import(path, opts)?;
        Ok((i.config, i.warnings))
    }
}
