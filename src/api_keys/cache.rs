//! Verified keys: a key once looked up is remembered by its hash, so an authenticated call costs no
//! database round trip in the steady state. Whether it still opens the API is decided on every call
//! from what is remembered ([`AuthenticatedKey::check`]: revoked, past its roll's grace).
//!
//! Revoking or rolling a key forgets it here at once and tells the other replicas ([`Topic::Keys`]),
//! which forget it when the message arrives (milliseconds). While that channel is down nothing is
//! trusted from memory, and nothing is remembered longer than [`REMEMBER_FOR`] in any case.

use std::time::Duration;

use diesel::QueryResult;

use super::AuthenticatedKey;
use crate::db::DbConnection;
use crate::remembered::{Remembered, Ticket};
use crate::replicas::{self, Subscriber, Topic};

/// The longest a remembered key is trusted without being read again.
pub const REMEMBER_FOR: Duration = Duration::from_secs(30);
/// Beyond this many keys the memory starts over (a flood of distinct keys cannot grow it).
const CAPACITY: usize = 50_000;

/// Keys by the hash of their secret, tagged with the key's id.
pub struct VerifiedKeys(Remembered<AuthenticatedKey>);

impl VerifiedKeys {
    /// `replicated`: other servers share the database, so memory is trusted only while their
    /// messages arrive.
    pub fn new(replicated: bool) -> Self {
        Self(Remembered::new(replicated, REMEMBER_FOR, CAPACITY))
    }

    /// The remembered key with this hash, if it may be trusted.
    pub fn get(&self, secret_hash: &str) -> Option<AuthenticatedKey> {
        self.0.with(secret_hash, |key| key.clone())
    }

    pub fn ticket(&self) -> Ticket {
        self.0.ticket()
    }

    /// Remembers a key read after `ticket` was taken, unless something was forgotten since.
    pub fn remember(&self, ticket: Ticket, secret_hash: String, key: AuthenticatedKey) {
        let id = key.key.id;
        self.0.remember(ticket, secret_hash, id, key);
    }

    /// Forgets a key once its revocation or roll has committed on this server (the other replicas
    /// hear of it through [`tell_replicas`]).
    pub fn forget(&self, key_id: i64) {
        self.0.forget([key_id]);
    }
}

/// Tells the other replicas to forget a key; part of the transaction that revokes or rolls it, so
/// the message goes out exactly when the change commits.
pub fn tell_replicas(conn: &mut DbConnection, key_id: i64) -> QueryResult<()> {
    replicas::publish(conn, Topic::Keys, &key_id.to_string())
}

impl Subscriber for VerifiedKeys {
    fn receive(&self, topic: Topic, payload: &str) {
        if topic == Topic::Keys {
            self.0.receive(payload);
        }
    }

    fn listening(&self, live: bool) {
        self.0.listening(live);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_keys::KeyIdentity;
    use crate::organizations::Organization;

    fn key(id: i64) -> AuthenticatedKey {
        AuthenticatedKey {
            key: KeyIdentity {
                id,
                name: "billing".into(),
                hint: "…abcd".into(),
                expires_at: None,
                revoked_at: None,
                rate_limit_per_minute: None,
            },
            organization: Organization {
                id: 1,
                slug: "acme".into(),
                name: "Acme".into(),
                created_at: chrono::NaiveDateTime::default(),
            },
        }
    }

    #[test]
    fn a_key_message_forgets_that_key_only() {
        let keys = VerifiedKeys::new(false);
        keys.remember(keys.ticket(), "a".into(), key(7));
        keys.remember(keys.ticket(), "b".into(), key(8));
        keys.receive(Topic::Runs, "7");
        assert!(keys.get("a").is_some(), "other topics are not about keys");
        keys.receive(Topic::Keys, "7");
        assert!(keys.get("a").is_none());
        assert_eq!(keys.get("b").map(|k| k.key.id), Some(8));
    }
}
