//! Every status Granite knows, with the rules that decide it: a run's lifecycle, what a driver reports
//! about itself, and the machine status admins see. Statuses that are stored go to the database as
//! text (the names below), through [`ToSql`]/[`FromSql`]; nothing else in the code spells them.

use std::fmt;

use chrono::NaiveDateTime;
use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;
use serde::{Deserialize, Serialize};

/// Writes and reads a unit-variant enum as its text name, on every backend.
macro_rules! stored_as_text {
    ($type:ty) => {
        impl<DB: Backend> ToSql<Text, DB> for $type
        where
            str: ToSql<Text, DB>,
        {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
                <str as ToSql<Text, DB>>::to_sql(self.as_str(), out)
            }
        }

        impl<DB: Backend> FromSql<Text, DB> for $type
        where
            String: FromSql<Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
                let text = <String as FromSql<Text, DB>>::from_sql(bytes)?;
                <$type>::parse(&text)
                    .ok_or_else(|| format!("unknown {} \"{text}\"", stringify!($type)).into())
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// Where a run is in its life: `queued` → `running` → `completed` or `failed`; `cancelled` from
/// `queued` or `running`. A running run whose machine is lost goes back to `queued`.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    AsExpression,
    FromSqlRow,
    utoipa::ToSchema,
)]
#[diesel(sql_type = Text)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

stored_as_text!(RunStatus);

impl RunStatus {
    pub const ALL: [RunStatus; 5] = [
        Self::Queued,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];
    /// The statuses a run ends in.
    pub const FINISHED: [RunStatus; 3] = [Self::Completed, Self::Failed, Self::Cancelled];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Queued => "Queued",
            Self::Running => "Running",
            Self::Completed => "Completed",
            Self::Failed => "Failed",
            Self::Cancelled => "Cancelled",
        }
    }

    pub fn is_finished(self) -> bool {
        Self::FINISHED.contains(&self)
    }

    /// A queued or running run may be cancelled; a finished one may not.
    pub fn can_cancel(self) -> bool {
        !self.is_finished()
    }

    /// A failed or cancelled run may be queued again, as a new run.
    pub fn can_retry(self) -> bool {
        matches!(self, Self::Failed | Self::Cancelled)
    }

    /// How a machine may end a run it holds.
    pub fn from_outcome(succeeded: bool) -> Self {
        if succeeded {
            Self::Completed
        } else {
            Self::Failed
        }
    }
}

/// What a driver says it is doing in its heartbeat.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    AsExpression,
    FromSqlRow,
    utoipa::ToSchema,
)]
#[diesel(sql_type = Text)]
#[serde(rename_all = "lowercase")]
pub enum ReportedStatus {
    #[default]
    Idle,
    Busy,
}

stored_as_text!(ReportedStatus);

impl ReportedStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Busy => "busy",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Idle, Self::Busy]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// How one hand-out of a run to a machine (an attempt) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub enum AttemptOutcome {
    Completed,
    Failed,
    Cancelled,
    /// The driver gave the run back (it was stopping); the attempt does not count.
    Released,
    /// The machine went Offline, was removed, or stopped reporting the run: back to the queue.
    Lost,
    /// Lost on its last attempt: the run failed.
    LeaseLost,
}

stored_as_text!(AttemptOutcome);

impl AttemptOutcome {
    pub const ALL: [AttemptOutcome; 6] = [
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
        Self::Released,
        Self::Lost,
        Self::LeaseLost,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Released => "released",
            Self::Lost => "lost",
            Self::LeaseLost => "lease_lost",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Completed => "Completed",
            Self::Failed => "Failed",
            Self::Cancelled => "Cancelled",
            Self::Released => "Given back",
            Self::Lost => "Machine lost, back to the queue",
            Self::LeaseLost => "Machine lost, run failed",
        }
    }
}

/// A machine's status as admins see it, decided by its last contact and whether it runs a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachineStatus {
    /// Contact within the window, no running job.
    Online,
    /// Contact within the window and a running job.
    Busy,
    /// No contact within the window, or never connected.
    Offline,
}

impl MachineStatus {
    pub const ALL: [MachineStatus; 3] = [Self::Online, Self::Busy, Self::Offline];

    /// The rule: contact within `offline_after` is Online, or Busy with a running job; else Offline.
    /// [`crate::machines`] applies the same rule as a query condition (`status_is`).
    pub fn from_last_seen(
        last_seen_at: Option<NaiveDateTime>,
        has_running_job: bool,
        now: NaiveDateTime,
        offline_after: chrono::Duration,
    ) -> Self {
        let in_contact = last_seen_at.is_some_and(|seen| seen > now - offline_after);
        Self::from_contact(in_contact, has_running_job)
    }

    /// The rule once contact is known: in contact within the window, Busy with a run, else Online;
    /// out of contact, Offline.
    pub fn from_contact(in_contact: bool, has_running_job: bool) -> Self {
        match (in_contact, has_running_job) {
            (false, _) => Self::Offline,
            (true, true) => Self::Busy,
            (true, false) => Self::Online,
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// As in `data-status` and filters.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Busy => "busy",
            Self::Offline => "offline",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Online => "Online",
            Self::Busy => "Busy",
            Self::Offline => "Offline",
        }
    }
}

impl fmt::Display for MachineStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_statuses_round_trip_and_know_their_ends() {
        for status in RunStatus::ALL {
            assert_eq!(RunStatus::parse(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::Value::String(status.as_str().into())
            );
            assert_eq!(status.can_cancel(), !status.is_finished());
        }
        assert!(!RunStatus::Queued.is_finished() && !RunStatus::Running.is_finished());
        assert_eq!(RunStatus::from_outcome(true), RunStatus::Completed);
        assert_eq!(RunStatus::from_outcome(false), RunStatus::Failed);
        assert_eq!(RunStatus::parse("done"), None);
    }

    #[test]
    fn machine_status_follows_last_contact_and_running_job() {
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0)
            .unwrap()
            .naive_utc();
        let window = chrono::Duration::seconds(30);
        let recent = Some(now - chrono::Duration::seconds(5));
        let stale = Some(now - chrono::Duration::seconds(30));
        assert_eq!(
            MachineStatus::from_last_seen(recent, false, now, window),
            MachineStatus::Online
        );
        assert_eq!(
            MachineStatus::from_last_seen(recent, true, now, window),
            MachineStatus::Busy
        );
        assert_eq!(
            MachineStatus::from_last_seen(stale, true, now, window),
            MachineStatus::Offline
        );
        assert_eq!(
            MachineStatus::from_last_seen(None, false, now, window),
            MachineStatus::Offline
        );
    }
}
