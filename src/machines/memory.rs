//! What a heartbeat answers from, remembered by the hash of each machine's credential: a heartbeat
//! that changes nothing costs no database round trip in the steady state (its contact time goes to
//! [`super::contacts`]).
//!
//! A machine is forgotten whenever something the answer depends on changes: the run it holds or that
//! run's status, paused, removed, its reported status. Database triggers announce every such change
//! (on PostgreSQL to every replica, [`Topic::Machines`]; on SQLite to this process, through the pool),
//! so no code path that changes a machine has to remember to. The rest of the rule (tickets, trust
//! only while the messages arrive, a safety expiry) is [`Remembered`]'s.

use std::time::Duration;

use chrono::NaiveDateTime;

use super::{Heard, Presence};
use crate::remembered::{Remembered, Ticket};
use crate::replicas::{Subscriber, Topic};
use crate::status::ReportedStatus;

/// The longest a remembered machine is trusted without being read again.
const REMEMBER_FOR: Duration = Duration::from_secs(30);
/// Beyond this many machines the memory starts over.
const CAPACITY: usize = 100_000;

pub struct Presences(Remembered<Presence>);

impl Presences {
    /// `replicated`: other servers share the database, so memory is trusted only while their
    /// messages arrive.
    pub fn new(replicated: bool) -> Self {
        Self(Remembered::new(replicated, REMEMBER_FOR, CAPACITY))
    }

    /// What a heartbeat finds, if the machine is remembered: answered in place, without copying it;
    /// an unchanged machine's contact time in memory moves on (its Online/Offline status follows).
    pub fn hear(
        &self,
        credential_hash: &str,
        status: ReportedStatus,
        reported: Option<&str>,
        now: NaiveDateTime,
        offline_after: chrono::Duration,
    ) -> Option<Heard> {
        self.0.with(credential_hash, |presence| {
            let heard = presence.heard(status, reported, now, offline_after);
            if let Heard::Unchanged { .. } = heard {
                presence.machine.last_seen_at = Some(now);
            }
            heard
        })
    }

    pub fn ticket(&self) -> Ticket {
        self.0.ticket()
    }

    /// Remembers a presence read after `ticket` was taken, unless a machine changed since.
    pub fn remember(&self, ticket: Ticket, credential_hash: String, presence: Presence) {
        let id = presence.machine.id;
        self.0.remember(ticket, credential_hash, id, presence);
    }

    /// Forgets machines whose state changed (written by this replica, or announced).
    pub fn forget(&self, machine_ids: impl IntoIterator<Item = i64>) {
        self.0.forget(machine_ids);
    }
}

impl Subscriber for Presences {
    fn receive(&self, topic: Topic, payload: &str) {
        if topic == Topic::Machines {
            self.0.receive(payload);
        }
    }

    fn listening(&self, live: bool) {
        self.0.listening(live);
    }
}
