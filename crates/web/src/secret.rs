//! Secret settings.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

/// A secret setting (a token, a URL with a password). `Debug` and `Display` print
/// `[redacted]`; [`Secret::expose`] is the one way to read it.
///
/// It parses from any text ([`FromStr`]), so a clap argument can be an `Option<Secret>` and
/// the argument struct can derive `Debug` without printing it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for comparison or use; never for printing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = Infallible;

    /// Any text is a secret, kept as given.
    fn from_str(value: &str) -> Result<Secret, Infallible> {
        Ok(Secret::new(value))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_its_value() {
        let secret = Secret::new("hunter2-hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "[redacted] [redacted]");
        assert_eq!(secret.expose(), "hunter2-hunter2");
    }

    #[test]
    fn a_secret_parses_from_any_text_as_given() {
        let secret: Secret = " hunter2 ".parse().unwrap();
        assert_eq!(secret.expose(), " hunter2 ");
        assert_eq!(format!("{:?}", Some(secret)), "Some([redacted])");
    }
}
