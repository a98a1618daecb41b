//! Where a driver keeps its enrollment: a JSON file only its owner can read.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct SavedEnrollment {
    pub server: String,
    pub machine_id: i64,
    pub organization: String,
    pub name: String,
    pub credential: String,
}

impl std::fmt::Debug for SavedEnrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SavedEnrollment(machine {} of {} at {})",
            self.machine_id, self.organization, self.server
        )
    }
}

/// `$XDG_CONFIG_HOME/granite/driver.json`, else `~/.config/granite/driver.json` (`%APPDATA%` on Windows).
pub fn default_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("APPDATA").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("granite").join("driver.json")
}

/// Writes the enrollment, readable by its owner only. Refuses to replace an existing one unless told.
pub fn save(path: &Path, enrollment: &SavedEnrollment, overwrite: bool) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if overwrite {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => anyhow::anyhow!(
            "{} already holds an enrollment; pass --force to replace it, or --credentials to keep both",
            path.display()
        ),
        _ => anyhow::anyhow!("cannot write {}: {e}", path.display()),
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(serde_json::to_string_pretty(enrollment)?.as_bytes())?;
    Ok(())
}

pub fn load(path: &Path) -> anyhow::Result<SavedEnrollment> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read {}: {e}. Enroll this machine first with `granite driver enroll`.",
            path.display()
        )
    })?;
    serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a driver enrollment: {e}", path.display()))
}
