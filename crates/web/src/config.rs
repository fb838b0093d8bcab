//! Start-up check reports.

use std::fmt;

/// One thing wrong with the configuration: which setting, and what to do about it.
///
/// Displayed as one line: `LOGBOOK_ADDR (--addr): cannot bind 127.0.0.1:80: permission denied; choose a free port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The environment variable and flag, e.g. `"FRONTEND_URL (--frontend-url)"`.
    pub setting: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl ConfigProblem {
    /// A problem with `setting` (name it as the operator would set it).
    pub fn new(setting: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigProblem {
            setting: setting.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.setting, self.message)
    }
}

/// What every service is told about the process it runs in, decided by the binary from its
/// common flags (`--env`, `--data-dir`, `--addr`) before any service is built.
#[derive(Debug, Clone)]
pub struct ServiceContext {
    /// `true` under `--env production` / `LOGBOOK_ENV=production`: every required setting must be
    /// given. `false` (development): missing settings get safe local defaults.
    pub production: bool,
    /// The data directory (`--data-dir`, `LOGBOOK_DATA_DIR`); it exists and is writable.
    pub data_dir: std::path::PathBuf,
    /// The address the listener is bound to (port 0 already resolved), for development-mode
    /// defaults such as `APP_URL=http://<addr>`.
    pub local_addr: std::net::SocketAddr,
}

/// Creates `dir` (and its parents) if needed and proves it writable by writing and removing a
/// probe file, so a read-only or mistyped directory is a start-up error naming the setting,
/// not a failure at the first write. The error says what failed and what to do.
pub fn ensure_writable_dir(dir: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| {
        format!(
            "cannot create {}: {e}; choose a writable directory",
            dir.display()
        )
    })?;
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"probe")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| {
            format!(
                "cannot write in {}: {e}; choose a writable directory",
                dir.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writable_directory_is_created_and_left_clean() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        ensure_writable_dir(&dir).unwrap();
        assert!(dir.is_dir());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "no probe left");
    }

    #[test]
    fn a_path_under_a_file_is_refused_with_what_to_do() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let error = ensure_writable_dir(&file.join("dir")).unwrap_err();
        assert!(error.starts_with("cannot create "), "{error}");
        assert!(error.ends_with("choose a writable directory"), "{error}");
    }
}
