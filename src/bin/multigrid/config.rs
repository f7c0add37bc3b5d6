//! `multigrid config`: the default config, every key with PySlowFast's default, as JSON; or
//! the config a PySlowFast YAML maps to (its warnings on stderr).

use multigrid::schedule::pyslowfast;

pub fn run(a: &crate::ConfigArgs) -> Result<(), String> {
    let config = match &a.from_yaml {
        None => multigrid::Config::default(),
        Some(path) => {
            let opts = pyslowfast::opts_from_args(&a.opts).map_err(|e| e.to_string())?;
            let imported = pyslowfast::import(path, &opts).map_err(|e| e.to_string())?;
            for w in &imported.warnings {
                eprintln!("multigrid: warning: {w}");
            }
            imported.config
        }
    };
    let text = serde_json::to_string_pretty(&config).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
}
