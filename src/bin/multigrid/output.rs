//! The output directories `demo` and `bench speedup` own: emptied before they train into
//! them, but only of what they wrote.

use std::path::Path;

/// Empties `out` before `demo` or `speedup` trains into it (a run directory left there would be
/// resumed). Only what those commands write is removed: the entries `own` names, each run
/// directory holding a `metrics.jsonl` or a `config.json`; anything else makes it an error naming the entry, so a
/// mistyped `--out` never deletes a user's files.
pub fn clear_own_output(out: &Path, own: impl Fn(&str) -> bool) -> Result<(), String> {
    let entries = match std::fs::read_dir(out) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read {}: {e}", out.display())),
    };
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", out.display()))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // A run directory holds its metrics, or at least the config `compare` wrote first.
        let run = ["metrics.jsonl", "config.json"]
            .iter()
            .any(|f| path.join(f).exists());
        let ours = own(&name) && (!path.is_dir() || run);
        if !ours {
            return Err(format!(
                "{} holds {name}, which this command did not write: give --out an empty or new \
                 directory, or one of this command's earlier outputs",
                out.display()
            ));
        }
    }
    std::fs::remove_dir_all(out).map_err(|e| format!("cannot empty {}: {e}", out.display()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_commands_own_outputs_are_cleared() {
        let out = std::env::temp_dir().join(format!("mg-own-output-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let own = |name: &str| name == "baseline" || name == "chart.svg";
        // Missing: nothing to do.
        super::clear_own_output(&out, own).unwrap();
        std::fs::create_dir_all(out.join("baseline")).unwrap();
        std::fs::write(out.join("baseline/metrics.jsonl"), "").unwrap();
        std::fs::write(out.join("chart.svg"), "").unwrap();
        super::clear_own_output(&out, own).unwrap();
        assert!(!out.exists());
        // A directory of the right name without a run in it is not ours.
        std::fs::create_dir_all(out.join("baseline")).unwrap();
        std::fs::write(out.join("baseline/notes.txt"), "mine").unwrap();
        let e = super::clear_own_output(&out, own).unwrap_err();
        assert!(e.contains("holds baseline"), "{e}");
        assert!(out.join("baseline/notes.txt").exists());
        std::fs::remove_dir_all(&out).unwrap();
    }
}
