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
