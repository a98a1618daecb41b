//! What a replica remembers of rows it read, so a hot path skips the database round trip: verified API
//! keys by their hash, machine presences by their credential's hash. One rule for all of it:
//!
//! - An entry is forgotten by its *tag* (the key's or the machine's id) when a change to that row
//!   commits: on this replica at once, on the others when the change's message arrives.
//! - A read that began before a forget must not be remembered: [`Remembered::ticket`] is taken before
//!   the read and [`Remembered::remember`] drops the entry if anything was forgotten since.
//! - On PostgreSQL nothing is trusted while the messages from other replicas are not arriving, and
//!   everything is forgotten when they start again (some may have been missed).
//! - Nothing is trusted longer than `remember_for` in any case, and a flood of distinct entries cannot
//!   grow the memory past `capacity` (it starts over).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Entry<V> {
    value: V,
    tag: i64,
    remembered_at: Instant,
}

struct Entries<V> {
    by_hash: HashMap<String, Entry<V>>,
    by_tag: HashMap<i64, Vec<String>>,
}

impl<V> Default for Entries<V> {
    fn default() -> Self {
        Self {
            by_hash: HashMap::new(),
            by_tag: HashMap::new(),
        }
    }
}

pub struct Remembered<V> {
    entries: Mutex<Entries<V>>,
    /// Bumped by every forget: a read that began before a forget must not remember what it read.
    generation: AtomicU64,
    /// Whether messages from other replicas arrive (always, with no other replicas).
    trusted: AtomicBool,
    remember_for: Duration,
    capacity: usize,
}

/// Taken before reading a row from the database; [`Remembered::remember`] needs it.
#[derive(Clone, Copy)]
pub struct Ticket(u64);

impl<V> Remembered<V> {
    /// `replicated`: other servers share the database, so memory is trusted only while their
    /// messages arrive ([`Remembered::listening`]).
    pub fn new(replicated: bool, remember_for: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::default(),
            generation: AtomicU64::new(0),
            trusted: AtomicBool::new(!replicated),
            remember_for,
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<V>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `f` to the entry remembered under `hash`, if it may be trusted.
    pub fn with<R>(&self, hash: &str, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        if !self.trusted.load(Ordering::Acquire) {
            return None;
        }
        let mut entries = self.lock();
        entries
            .by_hash
            .get_mut(hash)
            .filter(|e| e.remembered_at.elapsed() < self.remember_for)
            .map(|e| f(&mut e.value))
    }

    pub fn ticket(&self) -> Ticket {
        Ticket(self.generation.load(Ordering::Acquire))
    }

    /// Remembers a row read after `ticket` was taken, unless something was forgotten since.
    pub fn remember(&self, ticket: Ticket, hash: String, tag: i64, value: V) {
        let mut entries = self.lock();
        if self.generation.load(Ordering::Acquire) != ticket.0 {
            return;
        }
        if entries.by_hash.len() >= self.capacity {
            *entries = Entries::default();
        }
        let entry = Entry {
            value,
            tag,
            remembered_at: Instant::now(),
        };
        if let Some(previous) = entries.by_hash.insert(hash.clone(), entry) {
            if previous.tag == tag {
                return;
            }
            if let Some(hashes) = entries.by_tag.get_mut(&previous.tag) {
                hashes.retain(|h| *h != hash);
            }
        }
        entries.by_tag.entry(tag).or_default().push(hash);
    }

    /// Forgets every entry of these rows (a change to them has committed).
    pub fn forget(&self, tags: impl IntoIterator<Item = i64>) {
        let mut entries = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        for tag in tags {
            for hash in entries.by_tag.remove(&tag).unwrap_or_default() {
                entries.by_hash.remove(&hash);
            }
        }
    }

    pub fn forget_all(&self) {
        let mut entries = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        *entries = Entries::default();
    }

    /// The replicas' messages stopped (`false`) or started (`true`) arriving: start over either way.
    pub fn listening(&self, live: bool) {
        self.trusted.store(false, Ordering::Release);
        self.forget_all();
        self.trusted.store(live, Ordering::Release);
    }

    /// Applies a message that names rows by id, one per message; anything else forgets everything.
    pub fn receive(&self, payload: &str) {
        match payload.parse() {
            Ok(tag) => self.forget([tag]),
            Err(_) => self.forget_all(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(replicated: bool) -> Remembered<&'static str> {
        Remembered::new(replicated, Duration::from_secs(30), 3)
    }

    #[test]
    fn a_read_that_raced_a_forget_is_not_remembered() {
        let memory = memory(false);
        let ticket = memory.ticket();
        memory.forget([7]);
        memory.remember(ticket, "h".into(), 7, "old");
        assert_eq!(memory.with("h", |v| *v), None);
        memory.remember(memory.ticket(), "h".into(), 7, "new");
        assert_eq!(memory.with("h", |v| *v), Some("new"));
        memory.forget([7]);
        assert_eq!(memory.with("h", |v| *v), None);
    }

    #[test]
    fn forgetting_one_row_keeps_the_others() {
        let memory = memory(false);
        memory.remember(memory.ticket(), "a".into(), 1, "a");
        memory.remember(memory.ticket(), "b".into(), 2, "b");
        memory.forget([1]);
        assert_eq!(memory.with("a", |v| *v), None);
        assert_eq!(memory.with("b", |v| *v), Some("b"));
    }

    #[test]
    fn a_flood_of_entries_starts_over_at_capacity() {
        let memory = memory(false);
        for (i, hash) in ["a", "b", "c", "d"].into_iter().enumerate() {
            memory.remember(memory.ticket(), hash.into(), i as i64, hash);
        }
        assert_eq!(memory.with("a", |v| *v), None);
        assert_eq!(memory.with("d", |v| *v), Some("d"));
    }

    #[test]
    fn replicated_memory_is_trusted_only_while_listening() {
        let memory = memory(true);
        memory.remember(memory.ticket(), "h".into(), 7, "v");
        assert_eq!(
            memory.with("h", |v| *v),
            None,
            "not trusted before the listener runs"
        );
        memory.listening(true);
        memory.remember(memory.ticket(), "h".into(), 7, "v");
        assert_eq!(memory.with("h", |v| *v), Some("v"));
        memory.listening(false);
        assert_eq!(memory.with("h", |v| *v), None);
        memory.listening(true);
        assert_eq!(
            memory.with("h", |v| *v),
            None,
            "what was remembered before the drop is gone"
        );
    }

    #[test]
    fn entries_expire() {
        let memory = Remembered::new(false, Duration::from_millis(1), 10);
        memory.remember(memory.ticket(), "h".into(), 7, "v");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(memory.with("h", |v| *v), None);
    }
}
