//! The one place that makes, checks and hashes secrets (contract: "Secrets: one format for every kind").
//!
//! A secret is `PREFIX` + random base62 + 6 base62 digits of the CRC32 of everything before them. The
//! checksum lets the server refuse a mistyped or made-up secret without touching the database.

use std::fmt;

use sha2::{Digest, Sha256};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const CHECKSUM_LEN: usize = 6;
const HINT_RANDOM_CHARS: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    ApiKey,
    EnrollmentToken,
    MachineCredential,
}

impl SecretKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::ApiKey => "gk_live_",
            Self::EnrollmentToken => "enroll_",
            Self::MachineCredential => "gd_",
        }
    }

    const fn random_len(self) -> usize {
        match self {
            Self::ApiKey | Self::EnrollmentToken => 32,
            Self::MachineCredential => 40,
        }
    }

    const fn len(self) -> usize {
        self.prefix().len() + self.random_len() + CHECKSUM_LEN
    }
}

/// A secret in plaintext. It exists only between creation and the one response that shows it, and
/// between a request arriving and its hash being computed; `Debug` never prints it.
pub struct Secret {
    kind: SecretKind,
    text: String,
}

impl Secret {
    /// A fresh secret from the operating system's CSPRNG (32 base62 chars carry 190 bits).
    pub fn generate(kind: SecretKind) -> Self {
        let mut text = String::with_capacity(kind.len());
        text.push_str(kind.prefix());
        text.push_str(&random_base62(kind.random_len()));
        let checksum = checksum(text.as_bytes());
        text.push_str(&checksum);
        Self { kind, text }
    }

    /// Checks shape and checksum only: no database work.
    pub fn parse(kind: SecretKind, text: &str) -> Result<Self, MalformedSecret> {
        if text.len() != kind.len() || !text.starts_with(kind.prefix()) {
            return Err(MalformedSecret);
        }
        let body = &text[kind.prefix().len()..];
        if !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(MalformedSecret);
        }
        let (signed, sum) = text.split_at(text.len() - CHECKSUM_LEN);
        if checksum(signed.as_bytes()) != sum {
            return Err(MalformedSecret);
        }
        Ok(Self {
            kind,
            text: text.to_owned(),
        })
    }

    pub fn kind(&self) -> SecretKind {
        self.kind
    }

    /// The plaintext, for the single response that hands it out.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// What the database stores: the hex SHA-256 of the whole secret.
    pub fn hash(&self) -> String {
        sha256_hex(&self.text)
    }

    /// A non-secret reminder for lists: the prefix plus the first random characters, e.g. `gk_live_a1B2…`.
    pub fn hint(&self) -> String {
        let end = self.kind.prefix().len() + HINT_RANDOM_CHARS;
        format!("{}…", &self.text[..end])
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({:?}, {})", self.kind, self.hint())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a well-formed secret")]
pub struct MalformedSecret;

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// `len` characters of base62 from the OS CSPRNG, without modulo bias.
pub fn random_base62(len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).expect("the operating system's random number generator failed");
        // 248 = 62 * 4: bytes at or above it are dropped so every digit is equally likely.
        for &b in buf.iter().filter(|&&b| b < 248) {
            if out.len() == len {
                break;
            }
            out.push(BASE62[(b % 62) as usize] as char);
        }
    }
    out
}

/// `value` as exactly `width` base62 digits, most significant first, left-padded with `0` (higher
/// digits are dropped), so that byte order is numeric order.
pub fn base62_fixed(mut value: u64, width: usize) -> String {
    let mut digits = vec![b'0'; width];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    String::from_utf8(digits).expect("base62 is ASCII")
}

/// CRC32 (IEEE, as zlib) written as 6 base62 digits.
fn checksum(bytes: &[u8]) -> String {
    base62_fixed(crc32fast::hash(bytes) as u64, CHECKSUM_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_have_the_contract_shape_and_parse_back() {
        for (kind, len) in [
            (SecretKind::ApiKey, 8 + 32 + 6),
            (SecretKind::EnrollmentToken, 7 + 32 + 6),
            (SecretKind::MachineCredential, 3 + 40 + 6),
        ] {
            let secret = Secret::generate(kind);
            assert_eq!(secret.expose().len(), len);
            assert!(secret.expose().starts_with(kind.prefix()));
            let parsed = Secret::parse(kind, secret.expose()).unwrap();
            assert_eq!(parsed.hash(), secret.hash());
        }
    }

    #[test]
    fn checksum_is_zlib_crc32_in_base62() {
        // Expected values computed independently with Python's zlib.crc32.
        assert_eq!(checksum(b"123456789"), "3jZRME");
        let signed = format!("gk_live_{}", "0".repeat(32));
        assert_eq!(checksum(signed.as_bytes()), "39bIOv");
        assert!(Secret::parse(SecretKind::ApiKey, &format!("{signed}39bIOv")).is_ok());
        assert!(Secret::parse(SecretKind::ApiKey, &format!("{signed}39bIOw")).is_err());
    }

    #[test]
    fn rejects_wrong_prefix_length_alphabet_and_checksum() {
        let key = Secret::generate(SecretKind::ApiKey);
        let text = key.expose();
        assert!(Secret::parse(SecretKind::EnrollmentToken, text).is_err());
        assert!(Secret::parse(SecretKind::ApiKey, &text[..text.len() - 1]).is_err());
        let mut flipped = text.to_owned().into_bytes();
        let i = 10;
        flipped[i] = if flipped[i] == b'a' { b'b' } else { b'a' };
        assert!(Secret::parse(SecretKind::ApiKey, std::str::from_utf8(&flipped).unwrap()).is_err());
        let with_symbol = format!("{}-{}", &text[..20], &text[21..]);
        assert!(Secret::parse(SecretKind::ApiKey, &with_symbol).is_err());
        assert!(Secret::parse(SecretKind::ApiKey, "").is_err());
    }

    #[test]
    fn hint_and_debug_do_not_reveal_the_secret() {
        let key = Secret::generate(SecretKind::ApiKey);
        assert_eq!(key.hint(), format!("{}…", &key.expose()[..12]));
        assert!(!format!("{key:?}").contains(key.expose()));
        assert_eq!(key.hash().len(), 64);
        assert_ne!(key.hash(), key.expose());
    }

    #[test]
    fn random_part_uses_the_whole_alphabet() {
        let sample = random_base62(20_000);
        for &c in BASE62 {
            assert!(
                sample.as_bytes().contains(&c),
                "digit {} never drawn",
                c as char
            );
        }
    }
}
