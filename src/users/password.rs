//! Password hashing with Argon2id (the argon2 crate's defaults follow OWASP's recommendation).

use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};

/// A password that meets the policy. Long passphrases are welcome; the upper bound only stops
/// someone from making the server hash megabytes.
pub struct Password(String);

pub const MIN_LEN: usize = 10;
const MAX_LEN: usize = 256;

impl Password {
    pub fn parse(text: &str) -> Result<Self, String> {
        let chars = text.chars().count();
        if chars < MIN_LEN {
            return Err(format!("Use a password of at least {MIN_LEN} characters."));
        }
        if chars > MAX_LEN {
            return Err(format!("Use a password of at most {MAX_LEN} characters."));
        }
        Ok(Self(text.to_owned()))
    }

    /// A new password typed twice (setup, an invite): the policy, then that both agree.
    pub fn parse_confirmed(text: &str, confirmation: &str) -> Result<Self, String> {
        let password = Self::parse(text)?;
        if text != confirmation {
            return Err("The two passwords differ.".into());
        }
        Ok(password)
    }

    /// The PHC string to store (`$argon2id$v=19$…`). CPU-heavy: call it off the async executor.
    pub fn hash(&self) -> String {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(self.0.as_bytes(), &salt)
            .expect("argon2 with default parameters cannot fail")
            .to_string()
    }
}

/// Whether `password` matches the stored hash. CPU-heavy: call it off the async executor.
pub fn verify(password: &str, stored_hash: &str) -> bool {
    PasswordHash::new(stored_hash).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// Spends the same effort as a real check, so a sign-in for an unknown email takes as long as one with
/// a wrong password and does not reveal which emails exist.
pub fn verify_against_nothing(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = DUMMY.get_or_init(|| Password("not a real password".into()).hash());
    let _ = verify(password, hash);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let password = Password::parse("correct horse battery").unwrap();
        let (a, b) = (password.hash(), password.hash());
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify("correct horse battery", &a));
        assert!(!verify("correct horse batterz", &a));
        assert!(!verify("anything", "not a hash"));
    }

    #[test]
    fn policy() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse(&"x".repeat(257)).is_err());
        assert!(Password::parse("ten chars!").is_ok());
    }
}
