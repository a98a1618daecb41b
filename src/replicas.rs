//! What one replica tells the others. On PostgreSQL every `granite serve` listens on a few channels,
//! and a change the others must hear of (a run to claim, a key revoked) is a `NOTIFY` sent on the
//! connection that made it, so it is delivered only if that change commits. On SQLite there is one
//! server, so nothing travels and [`publish`] does nothing.

use std::sync::Weak;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use crate::db::DbConnection;

/// A channel between replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    /// Runs became claimable or finished (payloads: `runs::dispatch`).
    Runs,
    /// An API key was revoked or rolled: payload its id.
    Keys,
    /// What a heartbeat answers from changed for a machine (the run it holds or that run's status,
    /// paused, removed, reported status): payload its id, or `*` for many. Collected by database
    /// triggers, so no code path that changes a machine can forget to, and sent after the commit
    /// (`db::machine_changes`).
    Machines,
}

impl Topic {
    const ALL: [Self; 3] = [Self::Runs, Self::Keys, Self::Machines];

    pub(crate) fn channel(self) -> &'static str {
        match self {
            Self::Runs => "granite_runs",
            Self::Keys => "granite_keys",
            Self::Machines => "granite_machines",
        }
    }

    fn from_channel(channel: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.channel() == channel)
    }
}

/// The SQL that sends `message` (an SQL expression) on the channel `channel` (another): the schema
/// goes in front, since channels are per database and installations that share one database in
/// separate schemas must not hear each other.
macro_rules! notify_sql {
    ($channel:literal, $message:literal) => {
        concat!(
            "pg_notify(",
            $channel,
            ", current_schema() || '/' || ",
            $message,
            ")"
        )
    };
}
pub(crate) use notify_sql;

/// Tells the other replicas (PostgreSQL only), as part of the caller's transaction if one is open.
pub fn publish(conn: &mut DbConnection, topic: Topic, payload: &str) -> QueryResult<()> {
    if let DbConnection::Postgres(pg) = conn {
        crate::db::statement::statement(concat!("SELECT ", notify_sql!("$1", "$2")))
            .bind::<diesel::sql_types::Text, _>(topic.channel())
            .bind::<diesel::sql_types::Text, _>(payload)
            .execute(pg)?;
    }
    Ok(())
}

/// Something on this replica that hears what the others announce.
pub trait Subscriber: Send + Sync {
    fn receive(&self, topic: Topic, payload: &str);

    /// Whether messages are arriving. While they are not, and right after they start again (some
    /// may have been missed), whatever a subscriber remembers on the strength of them is suspect.
    fn listening(&self, live: bool);
}

/// Listens on a dedicated connection until every subscriber is gone. The PostgreSQL client library
/// offers no blocking wait here, so the listener checks every 5 ms.
pub fn spawn_listener(url: String, subscribers: Vec<Weak<dyn Subscriber>>) {
    std::thread::Builder::new()
        .name("granite-listen".into())
        .spawn(move || {
            while subscribers.iter().any(|s| s.strong_count() > 0) {
                let error = listen(&url, &subscribers);
                each(&subscribers, |s| s.listening(false));
                match error {
                    Ok(()) => return,
                    Err(error) => {
                        tracing::warn!(%error, "lost the PostgreSQL listener; reconnecting in 1 s");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        })
        .expect("a thread for the PostgreSQL listener");
}

fn each(subscribers: &[Weak<dyn Subscriber>], f: impl Fn(&dyn Subscriber)) {
    for subscriber in subscribers.iter().filter_map(Weak::upgrade) {
        f(&*subscriber);
    }
}

fn listen(
    url: &str,
    subscribers: &[Weak<dyn Subscriber>],
) -> Result<(), Box<dyn std::error::Error>> {
    let mut conn = diesel::PgConnection::establish(url)?;
    let schema = diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(
        "current_schema()",
    ))
    .get_result::<String>(&mut conn)?;
    for topic in Topic::ALL {
        conn.batch_execute(&format!("LISTEN {}", topic.channel()))?;
    }
    each(subscribers, |s| s.listening(true));
    let mut pinged = std::time::Instant::now();
    while subscribers.iter().any(|s| s.strong_count() > 0) {
        for notification in conn.notifications_iter() {
            let notification = notification?;
            let ours = notification
                .payload
                .strip_prefix(schema.as_str())
                .and_then(|rest| rest.strip_prefix('/'));
            if let (Some(topic), Some(payload)) = (Topic::from_channel(&notification.channel), ours)
            {
                each(subscribers, |s| s.receive(topic, payload));
            }
        }
        // A closed socket shows in the loop above; a silent network only when the connection is
        // used, so it is, once a second.
        if pinged.elapsed() >= Duration::from_secs(1) {
            conn.batch_execute("SELECT 1")?;
            pinged = std::time::Instant::now();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}
