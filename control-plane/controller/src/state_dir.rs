//! The state directory (`--state-dir`): what must survive a restart, so that a restart never
//! changes what is served.
//!
//! ```text
//!  STATE/config/        the file provider's last good files and object generations
//!  STATE/policies.json  the last valid spec of every policy (an invalid edit keeps it in force)
//!  STATE/modules/       verified Wasm modules, with the sources that delivered them
//! ```

use std::path::{Path, PathBuf};
use trellis_translate::policy::LastGood;

/// The state directory, private to the control plane (mode 0700).
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens (creating it if needed) the state directory at `dir`.
    pub fn open(dir: &Path) -> std::io::Result<StateDir> {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(StateDir {
            dir: dir.to_path_buf(),
        })
    }

    /// Where the file provider keeps its state.
    pub fn config_dir(&self) -> PathBuf {
        self.dir.join("config")
    }

    /// Where the module store keeps verified modules.
    pub fn modules_dir(&self) -> PathBuf {
        self.dir.join("modules")
    }

    /// The last valid policy specs kept by an earlier process (none when missing or
    /// unreadable: the policies as they are now then decide).
    pub fn read_policies(&self) -> LastGood {
        std::fs::read(self.dir.join("policies.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .map(|value| LastGood::from_json(&value))
            .unwrap_or_default()
    }

    /// Keeps the last valid policy specs (atomically).
    pub fn write_policies(&self, last_good: &LastGood) -> std::io::Result<()> {
        let bytes =
            serde_json::to_vec_pretty(&last_good.to_json()).map_err(std::io::Error::other)?;
        trellis_sources::state::write_atomically(&self.dir.join("policies.json"), &bytes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn policies_survive_a_reopen_and_garbage_reads_as_none() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let state = StateDir::open(&dir).unwrap();
        assert!(state.read_policies().is_empty(), "nothing kept yet");
        let kept = LastGood::from_json(&serde_json::json!([{
            "kind": "AuthorizationPolicy", "namespace": "apps", "name": "deny-admin",
            "generation": 3, "spec": {"defaultAction": "Deny"}
        }]));
        assert_eq!(kept.len(), 1);
        state.write_policies(&kept).unwrap();
        let reopened = StateDir::open(&dir).unwrap();
        assert_eq!(reopened.read_policies(), kept);
        std::fs::write(dir.join("policies.json"), b"{not json").unwrap();
        assert!(reopened.read_policies().is_empty());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }
}
