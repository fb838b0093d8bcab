//! Validated values. Parse at the edge, trust inside: a handler turns raw JSON strings into
//! these types once, and everything past it takes the types, never raw strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The longest email address accepted, in bytes (RFC 5321 path limit).
pub const EMAIL_MAX_BYTES: usize = 254;
/// The longest team name accepted, in characters.
pub const TEAM_NAME_MAX_CHARS: usize = 100;
/// The longest team description accepted, in characters.
pub const TEAM_DESCRIPTION_MAX_CHARS: usize = 1000;

/// An email address: trimmed, lowercased, and deliverable by the mailer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Trims, lowercases and validates `raw`; the error says what is wrong, in a sentence.
    pub fn parse(raw: &str) -> Result<EmailAddress, String> {
        let email = raw.trim().to_lowercase();
        if email.is_empty() {
            return Err("the email address is empty".into());
        }
        if email.len() > EMAIL_MAX_BYTES {
            return Err(format!(
                "the email address is longer than {EMAIL_MAX_BYTES} bytes"
            ));
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err("the email address has no @".into());
        };
        if local.is_empty() || local.len() > 64 || local.contains('@') {
            return Err("the part before the @ is empty, too long or contains an @".into());
        }
        if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("the email address contains a space or control character".into());
        }
        let labels_ok = domain.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
        if !domain.contains('.') || !labels_ok {
            return Err("the domain after the @ is not a valid host name".into());
        }
        if lettre::Address::from_str(&email).is_err() {
            return Err("the email address is not deliverable".into());
        }
        Ok(EmailAddress(email))
    }

    /// The normalized address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `c` breaks a line or is otherwise invisible control: C0/C1 controls (CR, LF, NUL,
/// NEL...) and the Unicode line and paragraph separators. A team name goes into the
/// `Subject:` of invitation mail, so none of these may ever reach it.
fn breaks_a_line_or_controls(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// A team name: trimmed, 1 to [`TEAM_NAME_MAX_CHARS`] characters, no control characters and
/// no line or paragraph separators (so it can never inject a mail header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamName(String);

impl TeamName {
    /// Trims and validates `raw`.
    pub fn parse(raw: &str) -> Result<TeamName, String> {
        let name = raw.trim();
        if name.is_empty() {
            return Err("name must not be empty".into());
        }
        if name.chars().count() > TEAM_NAME_MAX_CHARS {
            return Err(format!(
                "name must be at most {TEAM_NAME_MAX_CHARS} characters"
            ));
        }
        if name.chars().any(breaks_a_line_or_controls) {
            return Err("name must not contain line breaks or other control characters".into());
        }
        Ok(TeamName(name.to_owned()))
    }

    /// The name as given (trimmed).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key that uniqueness is enforced on: the name lowercased (Unicode-aware).
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }
}

/// Validates a team description: at most [`TEAM_DESCRIPTION_MAX_CHARS`] characters; line
/// breaks and tabs are allowed, other control characters are not (PostgreSQL cannot store a
/// NUL in `TEXT`, and no description needs a bell or an escape).
pub fn parse_description(raw: &str) -> Result<String, String> {
    if raw.chars().count() > TEAM_DESCRIPTION_MAX_CHARS {
        return Err(format!(
            "description must be at most {TEAM_DESCRIPTION_MAX_CHARS} characters"
        ));
    }
    if raw
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(
            "description must not contain control characters other than line breaks and tabs"
                .into(),
        );
    }
    Ok(raw.to_owned())
}

/// What a member may do in a team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An ordinary member (the default).
    #[default]
    Member,
    /// A member who administers the team.
    Admin,
}

impl Role {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }

    /// Reads the stored spelling; anything unknown reads as a plain member.
    pub(crate) fn from_stored(stored: &str) -> Role {
        if stored == "admin" {
            Role::Admin
        } else {
            Role::Member
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_email_is_trimmed_and_lowercased() {
        let email = EmailAddress::parse("  Alice@Example.COM \n").unwrap();
        assert_eq!(email.as_str(), "alice@example.com");
    }

    #[test]
    fn malformed_emails_are_rejected() {
        for raw in [
            "",
            "   ",
            "alice",
            "@example.com",
            "alice@",
            "alice@example",
            "al ice@example.com",
            "alice@exa mple.com",
            "alice@-example.com",
            "alice@example..com",
            "a@b@example.com",
        ] {
            assert!(EmailAddress::parse(raw).is_err(), "{raw:?} was accepted");
        }
    }

    #[test]
    fn a_team_name_key_ignores_case() {
        let a = TeamName::parse(" Core Team ").unwrap();
        let b = TeamName::parse("CORE team").unwrap();
        assert_eq!(a.as_str(), "Core Team");
        assert_eq!(a.key(), b.key());
    }

    #[test]
    fn an_empty_or_overlong_team_name_is_rejected() {
        assert!(TeamName::parse("  ").is_err());
        assert!(TeamName::parse(&"x".repeat(TEAM_NAME_MAX_CHARS + 1)).is_err());
        assert!(TeamName::parse(&"x".repeat(TEAM_NAME_MAX_CHARS)).is_ok());
    }

    #[test]
    fn a_team_name_with_any_line_break_is_rejected() {
        for raw in [
            "a\r\nb",
            "a\nb",
            "a\rb",
            "a\u{85}b",
            "a\u{2028}b",
            "a\u{2029}b",
            "a\0b",
        ] {
            assert!(TeamName::parse(raw).is_err(), "{raw:?} was accepted");
        }
    }

    #[test]
    fn a_description_keeps_line_breaks_and_tabs_but_not_other_controls() {
        assert!(parse_description("a\r\nb\tc").is_ok());
        assert!(parse_description("a\0b").is_err());
        assert!(parse_description("a\u{1b}[31mb").is_err());
    }
}
