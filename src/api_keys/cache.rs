//! Verified keys: a key once looked up is remembered by its hash, so an authenticated call costs no
//! database round trip in the steady state. Whether it still opens the API is decided on every call
//! from what is remembered ([`AuthenticatedKey::check`]: revoked, past its roll's grace).
//!
//! Revoking or rolling a key forgets it here at once and tells the other replicas ([`Topic::Keys`]),
//! which forget it when the message arrives (milliseconds). While that channel is down nothing is
//! trusted from memory, and nothing is remembered longer than [`REMEMBER_FOR`] in any case.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use diesel::QueryResult;

use super::AuthenticatedKey;
use crate::db::DbConnection;
use crate::replicas::{self, Subscriber, Topic};

/// The longest a remembered key is trusted without being read again.
pub const REMEMBER_FOR: Duration = Duration::from_secs(30);
/// Beyond this many keys the memory starts over (a flood of distinct keys cannot grow it).
const CAPACITY: usize = 50_000;

struct Entry {
    key: AuthenticatedKey,
    remembered_at: Instant,
}

pub struct VerifiedKeys {
    entries: Mutex<HashMap<String, Entry>>,
    /// Bumped by every forget: a lookup that began before a forget must not remember what it read.
    generation: AtomicU64,
    /// Whether messages from other replicas arrive (always, with no other replicas).
    trusted: AtomicBool,
}

/// Taken before reading a key from the database; [`VerifiedKeys::remember`] needs it.
#[derive(Clone, Copy)]
pub struct Ticket(u64);

impl VerifiedKeys {
    /// `replicated`: other servers share the database, so memory is trusted only while their
    /// messages arrive.
    pub fn new(replicated: bool) -> Self {
        Self {
            entries: Mutex::default(),
            generation: AtomicU64::new(0),
            trusted: AtomicBool::new(!replicated),
        }
    }

    /// The remembered key with this hash, if it may be trusted.
    pub fn get(&self, secret_hash: &str) -> Option<AuthenticatedKey> {
        if !self.trusted.load(Ordering::Acquire) {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(secret_hash)
            .filter(|e| e.remembered_at.elapsed() < REMEMBER_FOR)
            .map(|e| e.key.clone())
    }

    pub fn ticket(&self) -> Ticket {
        Ticket(self.generation.load(Ordering::Acquire))
    }

    /// Remembers a key read after `ticket` was taken, unless something was forgotten since.
    pub fn remember(&self, ticket: Ticket, secret_hash: String, key: AuthenticatedKey) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) != ticket.0 {
            return;
        }
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(
            secret_hash,
            Entry {
                key,
                remembered_at: Instant::now(),
            },
        );
    }

    /// Forgets a key once its revocation or roll has committed on this server (the other replicas
    /// hear of it through [`tell_replicas`]).
    pub fn forget(&self, key_id: i64) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.retain(|_, e| e.key.key.id != key_id);
    }

    fn forget_all(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
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
            match payload.parse() {
                Ok(key_id) => self.forget(key_id),
                Err(_) => self.forget_all(),
            }
        }
    }

    /// Messages may have been missed while the channel was down: start over either way.
    fn listening(&self, live: bool) {
        self.trusted.store(false, Ordering::Release);
        self.forget_all();
        self.trusted.store(live, Ordering::Release);
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
    fn a_lookup_that_raced_a_forget_is_not_remembered() {
        let keys = VerifiedKeys::new(false);
        let ticket = keys.ticket();
        keys.forget(7);
        keys.remember(ticket, "h".into(), key(7));
        assert!(keys.get("h").is_none());
        keys.remember(keys.ticket(), "h".into(), key(7));
        assert_eq!(keys.get("h").map(|k| k.key.id), Some(7));
        keys.forget(7);
        assert!(keys.get("h").is_none());
    }

    #[test]
    fn replicated_memory_is_trusted_only_while_listening() {
        let keys = VerifiedKeys::new(true);
        keys.remember(keys.ticket(), "h".into(), key(7));
        assert!(
            keys.get("h").is_none(),
            "not trusted before the listener runs"
        );
        keys.listening(true);
        keys.remember(keys.ticket(), "h".into(), key(7));
        assert!(keys.get("h").is_some());
        keys.listening(false);
        assert!(keys.get("h").is_none());
        keys.listening(true);
        assert!(
            keys.get("h").is_none(),
            "what was remembered before the drop is gone"
        );
    }
}
