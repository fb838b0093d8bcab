//! Validated values. Parse at the edge, trust inside: a handler turns raw JSON strings into
//! these types once, and everything past it takes the types, never raw strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
use utoipa::ToSchema;

/// The longest email address accepted, in bytes (RFC 5321 path limit).
pub const EMAIL_MAX_BYTES: usize = 254;
/// The longest team name accepted, in characters.
pub const TEAM_NAME_MAX_CHARS: usize = 100;
/// The longest team description accepted, in characters.
pub const TEAM_DESCRIPTION_MAX_CHARS: usize = 1000;

/// The comparison form of text: Unicode NFKC, then full case folding, then NFKC again (the
/// `NFKC_Casefold` recipe of Unicode's UAX #31, without removing default-ignorables, which
/// [`refuses_format_or_bidi`] refuses instead). "Straße" and "STRASSE", or "Café" written with
/// a combining accent and with a precomposed one, have one key.
pub fn comparison_key(text: &str) -> String {
    let folded = caseless::default_case_fold_str(&text.nfkc().collect::<String>());
    folded.nfkc().collect()
}

/// Whether `c` is a Unicode format character (general category Cf): zero-width spaces and
/// joiners, the byte order mark, soft hyphens, and every bidirectional control (LRE, RLO, LRI,
/// PDI, LRM, ALM...). They are invisible, so two names that look the same could differ, and a
/// bidi override can make a mail subject read backwards.
pub fn refuses_format_or_bidi(c: char) -> bool {
    c.general_category() == GeneralCategory::Format
}

/// An email address: trimmed, in its comparison form ([`comparison_key`]: NFKC and case
/// folded, so `Alice@Example.com` and `alice@example.com` are one address), and deliverable by
/// the mailer. The folded form is also the one mailed: every mail system treats the domain
/// case-insensitively, and in practice local parts too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Trims, normalizes and validates `raw`; the error says what is wrong, in a sentence.
    pub fn parse(raw: &str) -> Result<EmailAddress, String> {
        let trimmed = raw.trim();
        if trimmed.chars().any(refuses_format_or_bidi) {
            return Err(
                "the email address contains an invisible format or bidirectional control character"
                    .into(),
            );
        }
        let email = comparison_key(trimmed);
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

/// A team name: trimmed, NFC-normalized for display, 1 to [`TEAM_NAME_MAX_CHARS`]
/// characters, no control, format or bidi characters and no line or paragraph separators (so
/// it can never inject a mail header or read differently from how it looks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamName(String);

impl TeamName {
    /// Trims, normalizes and validates `raw`.
    pub fn parse(raw: &str) -> Result<TeamName, String> {
        let name: String = raw.trim().nfc().collect();
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
        if name.chars().any(refuses_format_or_bidi) {
            return Err(
                "name must not contain invisible format or bidirectional control characters".into(),
            );
        }
        Ok(TeamName(name))
    }

    /// The name as given (trimmed, NFC).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key that uniqueness is enforced on: [`comparison_key`] of the name.
    pub fn key(&self) -> String {
        comparison_key(&self.0)
    }
}

/// Validates a team description: at most [`TEAM_DESCRIPTION_MAX_CHARS`] characters; line
/// breaks and tabs are allowed, other control characters are not (PostgreSQL cannot store a
/// NUL in `TEXT`, and no description needs a bell or an escape), nor bidi controls.
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
    if raw.chars().any(refuses_format_or_bidi) {
        return Err(
            "description must not contain invisible format or bidirectional control characters"
                .into(),
        );
    }
    Ok(raw.nfc().collect())
}

/// What a member may do in a team. The service records roles; enforcing what each may do is
/// the business of the product that calls this API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An ordinary member (the default).
    #[default]
    Member,
    /// A member who administers the team.
    Admin,
    /// A member who owns the team.
    Owner,
}

impl Role {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    /// Reads the stored spelling; anything unknown reads as a plain member.
    pub(crate) fn from_stored(stored: &str) -> Role {
        match stored {
            "admin" => Role::Admin,
            "owner" => Role::Owner,
            _ => Role::Member,
        }
    }
}

/// Where an invitation stands. `Expired` is also what a `pending` row past its `expires_at`
/// reads as, everywhere, before the worker's sweep marks it (see `InvitationStatus::at`).
///
/// Stored (and serialized) as [`InvitationStatus::as_str`]. Values written by the service are
/// bound from this enum; `WHERE` clauses keep the literal spellings (`status = 'pending'`),
/// because the partial indexes of the migrations are defined with them and a planner only
/// uses a partial index for a literal that matches its predicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InvitationStatus {
    /// Waiting to be accepted; its links work.
    Pending,
    /// Turned into a membership.
    Accepted,
    /// Revoked by an admin (or by deleting the team).
    Revoked,
    /// Past its expiry, never accepted.
    Expired,
}

impl InvitationStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            InvitationStatus::Pending => "pending",
            InvitationStatus::Accepted => "accepted",
            InvitationStatus::Revoked => "revoked",
            InvitationStatus::Expired => "expired",
        }
    }

    /// Reads the stored spelling (anything unknown reads as expired: never usable).
    pub(crate) fn from_stored(stored: &str) -> InvitationStatus {
        match stored {
            "pending" => InvitationStatus::Pending,
            "accepted" => InvitationStatus::Accepted,
            "revoked" => InvitationStatus::Revoked,
            _ => InvitationStatus::Expired,
        }
    }

    /// The status as of `now_ms`, for a row stored as `stored` with `expires_at_ms`: one rule
    /// for expiry everywhere.
    pub(crate) fn at(stored: &str, expires_at_ms: i64, now_ms: i64) -> InvitationStatus {
        match InvitationStatus::from_stored(stored) {
            InvitationStatus::Pending if expires_at_ms <= now_ms => InvitationStatus::Expired,
            status => status,
        }
    }
}

impl fmt::Display for InvitationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an invitation's mail stands. Stored and serialized as [`DeliveryStatus::as_str`]
/// (literal in `WHERE` clauses, like [`InvitationStatus`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not tried yet (or resent).
    Queued,
    /// Handed to the SMTP server (or written to a file).
    Sent,
    /// The last attempt failed; retrying with backoff.
    Failing,
    /// Given up: a permanent (5xx) SMTP reply, or `MAIL_MAX_ATTEMPTS` failures.
    Failed,
}

impl DeliveryStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Failing => "failing",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// Reads the stored spelling (anything unknown reads as queued).
    pub(crate) fn from_stored(stored: &str) -> DeliveryStatus {
        match stored {
            "sent" => DeliveryStatus::Sent,
            "failing" => DeliveryStatus::Failing,
            "failed" => DeliveryStatus::Failed,
            _ => DeliveryStatus::Queued,
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
    fn names_that_differ_only_in_case_folding_or_normal_form_have_one_key() {
        let pairs = [
            ("Straße", "STRASSE"),
            ("Cafe\u{301}", "Caf\u{e9}"),
            ("\u{fb01}le", "FILE"),
            ("\u{3a3}\u{3b1}\u{3c2}", "\u{3c3}\u{3b1}\u{3c3}"),
            ("\u{ff21}BC", "abc"),
        ];
        for (a, b) in pairs {
            let a = TeamName::parse(a).unwrap();
            let b = TeamName::parse(b).unwrap();
            assert_eq!(a.key(), b.key(), "{a:?} vs {b:?}");
        }
        assert_eq!(
            TeamName::parse("Cafe\u{301}").unwrap().as_str(),
            "Caf\u{e9}"
        );
    }

    #[test]
    fn emails_that_differ_only_in_case_folding_or_normal_form_are_one_address() {
        let pairs = [
            ("straße@example.com", "STRASSE@example.com"),
            ("cafe\u{301}@example.com", "CAF\u{c9}@example.com"),
            ("alice@\u{ff25}xample.com", "ALICE@example.com"),
        ];
        for (a, b) in pairs {
            assert_eq!(
                EmailAddress::parse(a).unwrap(),
                EmailAddress::parse(b).unwrap(),
                "{a:?} vs {b:?}"
            );
        }
    }

    #[test]
    fn format_and_bidi_controls_are_refused_in_names_emails_and_descriptions() {
        for c in [
            '\u{200b}', '\u{200d}', '\u{feff}', '\u{202e}', '\u{2066}', '\u{200f}', '\u{ad}',
        ] {
            let text = format!("Co{c}re");
            assert!(TeamName::parse(&text).is_err(), "{c:?} accepted in a name");
            assert!(
                parse_description(&text).is_err(),
                "{c:?} accepted in a description"
            );
            let email = format!("al{c}ice@example.com");
            assert!(
                EmailAddress::parse(&email).is_err(),
                "{c:?} accepted in an email"
            );
        }
    }

    #[test]
    fn an_expired_pending_invitation_reads_as_expired() {
        assert_eq!(
            InvitationStatus::at("pending", 10, 9),
            InvitationStatus::Pending
        );
        assert_eq!(
            InvitationStatus::at("pending", 10, 10),
            InvitationStatus::Expired
        );
        assert_eq!(
            InvitationStatus::at("accepted", 10, 20),
            InvitationStatus::Accepted
        );
        assert_eq!(
            InvitationStatus::at("revoked", 10, 20),
            InvitationStatus::Revoked
        );
    }

    #[test]
    fn a_description_keeps_line_breaks_and_tabs_but_not_other_controls() {
        assert!(parse_description("a\r\nb\tc").is_ok());
        assert!(parse_description("a\0b").is_err());
        assert!(parse_description("a\u{1b}[31mb").is_err());
    }
}
