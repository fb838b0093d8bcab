//! Start-up checks: [`Setting`] names a setting as an operator sets it, [`Checker`] collects
//! every [`ConfigProblem`] of a service's settings, and [`ServiceContext`] is what the binary
//! tells each service about the process.

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

/// A setting as an operator sets it: its environment variable and its command-line flag.
///
/// Every start-up problem names the setting it is about this way, displayed as
/// `ENV (--flag)`, e.g. `DATABASE_URL (--database-url)`. Services declare one constant per
/// setting and pass it to a [`Checker`], so no label is typed twice.
///
/// ```
/// use web::config::Setting;
///
/// const DATABASE_URL: Setting = Setting::new("DATABASE_URL", "--database-url");
/// assert_eq!(DATABASE_URL.to_string(), "DATABASE_URL (--database-url)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Setting {
    /// The environment variable, e.g. `"DATABASE_URL"`.
    pub env: &'static str,
    /// The flag with its dashes, e.g. `"--database-url"`.
    pub flag: &'static str,
}

impl Setting {
    /// The setting read from `env` or given as `flag` (written with its dashes).
    pub const fn new(env: &'static str, flag: &'static str) -> Setting {
        Setting { env, flag }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.env, self.flag)
    }
}

impl From<Setting> for String {
    /// The label of [`ConfigProblem::setting`]: `ENV (--flag)`.
    fn from(setting: Setting) -> String {
        setting.to_string()
    }
}

/// Collects every [`ConfigProblem`] of a start-up check, so that a service reports all of
/// them together instead of stopping at the first.
///
/// The generic checks live here ([`Checker::required`], [`Checker::range`]); a service adds
/// its own as functions taking `&mut Checker`, recording what they find with
/// [`Checker::problem`]. [`Checker::finish`] turns the collection into the check's result.
///
/// ```
/// use web::config::{Checker, Setting};
///
/// const TTL: Setting = Setting::new("INVITE_TTL_HOURS", "--invite-ttl-hours");
/// let mut checker = Checker::new();
/// checker.range(TTL, 0, 1, 8784);
/// let problems = checker.finish().unwrap_err();
/// assert_eq!(
///     problems[0].to_string(),
///     "INVITE_TTL_HOURS (--invite-ttl-hours): 0 is out of range; set it between 1 and 8784"
/// );
/// ```
#[derive(Debug, Default)]
pub struct Checker {
    problems: Vec<ConfigProblem>,
}

impl Checker {
    /// A checker with no problems yet.
    pub fn new() -> Checker {
        Checker::default()
    }

    /// Records a problem with `setting`: what is wrong and what to do.
    pub fn problem(&mut self, setting: Setting, message: impl Into<String>) {
        self.push(ConfigProblem::new(setting, message));
    }

    /// Records a problem that is already built (for one not about a single [`Setting`]).
    pub fn push(&mut self, problem: ConfigProblem) {
        self.problems.push(problem);
    }

    /// The problems so far, for checks written against a plain list of problems.
    pub fn problems_mut(&mut self) -> &mut Vec<ConfigProblem> {
        &mut self.problems
    }

    /// `true` while nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// A setting required in production: the given value (trimmed) if it is set and not
    /// blank; otherwise, in production, a problem `missing; set it to <what>`, and `None` (in
    /// development the caller picks a default).
    pub fn required(
        &mut self,
        setting: Setting,
        given: Option<&str>,
        production: bool,
        what: &str,
    ) -> Option<String> {
        match given.map(str::trim) {
            Some(value) if !value.is_empty() => Some(value.to_owned()),
            _ if production => {
                self.problem(setting, format!("missing; set it to {what}"));
                None
            }
            _ => None,
        }
    }

    /// A number that must lie within `min..=max`, else a problem naming the range.
    pub fn range(&mut self, setting: Setting, value: u64, min: u64, max: u64) {
        if value < min || value > max {
            self.problem(
                setting,
                format!("{value} is out of range; set it between {min} and {max}"),
            );
        }
    }

    /// `Ok` if nothing was found wrong, else every problem in the order found.
    pub fn finish(self) -> Result<(), Vec<ConfigProblem>> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(self.problems)
        }
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

    const SETTING: Setting = Setting::new("TEAMS_MAX_BODY_BYTES", "--teams-max-body-bytes");

    #[test]
    fn a_setting_reads_as_its_variable_and_flag() {
        assert_eq!(
            SETTING.to_string(),
            "TEAMS_MAX_BODY_BYTES (--teams-max-body-bytes)"
        );
        assert_eq!(
            ConfigProblem::new(SETTING, "too small").to_string(),
            "TEAMS_MAX_BODY_BYTES (--teams-max-body-bytes): too small"
        );
    }

    #[test]
    fn a_checker_keeps_every_problem_in_order() {
        let mut checker = Checker::new();
        assert_eq!(
            checker.required(SETTING, Some("  x "), true, "y"),
            Some("x".into())
        );
        assert_eq!(checker.required(SETTING, Some("  "), false, "y"), None);
        assert!(checker.is_empty());
        assert_eq!(checker.required(SETTING, None, true, "a size"), None);
        checker.range(SETTING, 5, 1, 4);
        checker.range(SETTING, 4, 1, 4);
        let problems = checker.finish().unwrap_err();
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "TEAMS_MAX_BODY_BYTES (--teams-max-body-bytes): missing; set it to a size",
                "TEAMS_MAX_BODY_BYTES (--teams-max-body-bytes): 5 is out of range; set it between 1 and 4",
            ]
        );
        assert_eq!(Checker::new().finish(), Ok(()));
    }

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
