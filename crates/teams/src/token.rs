//! Invitation tokens: 256 bits from the operating system's CSPRNG, URL-safe base64 without
//! padding (43 characters). Only the SHA-256 of a token is ever stored; the raw token exists
//! in memory while a message is built and in the message itself.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// The number of random bytes in a token (256 bits).
pub const TOKEN_BYTES: usize = 32;

/// A raw invitation token. `Debug` does not show it, so it cannot leak into a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct InviteToken(String);

impl InviteToken {
    /// Mints a fresh token from the OS CSPRNG.
    pub fn generate() -> Result<InviteToken, getrandom::Error> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(InviteToken(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Wraps a token presented by a client (not validated: an unknown token simply matches no
    /// stored hash).
    pub fn from_presented(raw: &str) -> InviteToken {
        InviteToken(raw.trim().to_owned())
    }

    /// The token text, to put in a link.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Lowercase hex SHA-256 of the token: the only form that is stored.
    pub fn hash(&self) -> String {
        sha256_hex(self.0.as_bytes())
    }
}

impl fmt::Debug for InviteToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InviteToken([redacted])")
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// A random secret of `bytes` bytes as URL-safe base64 (used for the development admin token).
pub(crate) fn random_secret(bytes: usize) -> Result<String, getrandom::Error> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer)?;
    Ok(URL_SAFE_NO_PAD.encode(buffer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_43_url_safe_characters_and_tokens_differ() {
        let a = InviteToken::generate().unwrap();
        let b = InviteToken::generate().unwrap();
        assert_eq!(a.expose().len(), 43);
        assert!(
            a.expose()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(a, b);
    }

    #[test]
    fn a_token_hash_is_its_sha256_and_debug_hides_it() {
        let token = InviteToken::from_presented("abc");
        assert_eq!(
            token.hash(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(!format!("{token:?}").contains("abc"));
    }
}
