//! Waking whoever waits: drivers long-polling for a run of their organization, and callers waiting for a
//! run to finish (`wait=true`). Waiters sleep on a `Notify`, holding no thread and no connection.
//! Within one server the wake-up is immediate; across PostgreSQL replicas it travels by
//! `NOTIFY granite_runs`, which a listener on every replica turns into the same local wake-up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use tokio::sync::Notify;

use crate::db::DbConnection;

const CHANNEL: &str = "granite_runs";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// A run became claimable in the organization.
    Queued,
    /// A run of the organization finished (or was cancelled).
    Finished,
}

impl Signal {
    fn tag(self) -> char {
        match self {
            Self::Queued => 'q',
            Self::Finished => 'f',
        }
    }
}

#[derive(Default)]
pub struct Dispatcher {
    signals: Mutex<HashMap<(i64, char), Arc<Notify>>>,
}

impl Dispatcher {
    /// The signal to wait on. Register interest (`Notified::enable`) before checking the database, so a
    /// wake-up between the check and the wait is not lost.
    pub fn signal(&self, organization_id: i64, signal: Signal) -> Arc<Notify> {
        let mut signals = self.signals.lock().unwrap_or_else(|e| e.into_inner());
        signals
            .entry((organization_id, signal.tag()))
            .or_default()
            .clone()
    }

    /// Wakes the waiters of this server.
    pub fn announce(&self, organization_id: i64, signal: Signal) {
        let signals = self.signals.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(notify) = signals.get(&(organization_id, signal.tag())) {
            notify.notify_waiters();
        }
    }
}

/// Tells the other replicas (PostgreSQL only; delivered when the surrounding transaction commits).
pub fn publish(conn: &mut DbConnection, organization_id: i64, signal: Signal) -> QueryResult<()> {
    if let DbConnection::Postgres(pg) = conn {
        diesel::sql_query("SELECT pg_notify($1, $2)")
            .bind::<diesel::sql_types::Text, _>(CHANNEL)
            .bind::<diesel::sql_types::Text, _>(format!("{}:{organization_id}", signal.tag()))
            .execute(pg)?;
    }
    Ok(())
}

/// Listens for other replicas' signals on a dedicated connection and wakes local waiters, until the
/// server that owns `dispatcher` is gone. The PostgreSQL client library offers no blocking wait here, so
/// the listener checks every 5 ms.
pub fn spawn_postgres_listener(url: String, dispatcher: Weak<Dispatcher>) {
    std::thread::Builder::new()
        .name("granite-listen".into())
        .spawn(move || {
            while dispatcher.strong_count() > 0 {
                if let Err(error) = listen(&url, &dispatcher) {
                    tracing::warn!(%error, "lost the PostgreSQL listener; reconnecting in 1 s");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        })
        .expect("a thread for the PostgreSQL listener");
}

fn listen(url: &str, dispatcher: &Weak<Dispatcher>) -> Result<(), Box<dyn std::error::Error>> {
    let mut conn = diesel::PgConnection::establish(url)?;
    conn.batch_execute(&format!("LISTEN {CHANNEL}"))?;
    loop {
        let Some(dispatcher) = dispatcher.upgrade() else {
            return Ok(());
        };
        for notification in conn.notifications_iter() {
            let notification = notification?;
            let Some((tag, organization)) = notification.payload.split_once(':') else {
                continue;
            };
            let Ok(organization_id) = organization.parse::<i64>() else {
                continue;
            };
            let signal = if tag == "q" {
                Signal::Queued
            } else {
                Signal::Finished
            };
            dispatcher.announce(organization_id, signal);
        }
        drop(dispatcher);
        std::thread::sleep(Duration::from_millis(5));
    }
}
