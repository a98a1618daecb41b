//! Driver machines and the rule that turns their last contact into a status (contract: "Machine status").

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConnection;
use crate::db::schema::machines;

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
    pub fn from_last_seen(
        last_seen_at: Option<NaiveDateTime>,
        has_running_job: bool,
        now: NaiveDateTime,
        offline_after: chrono::Duration,
    ) -> Self {
        match last_seen_at {
            Some(seen) if seen > now - offline_after => {
                if has_running_job { Self::Busy } else { Self::Online }
            }
            _ => Self::Offline,
        }
    }
}

/// Machines Online and Busy right now (together: Active Drivers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActiveCounts {
    pub online: i64,
    pub busy: i64,
}

pub fn count_active(
    conn: &mut DbConnection,
    organization_id: i64,
    now: NaiveDateTime,
    offline_after: chrono::Duration,
) -> QueryResult<ActiveCounts> {
    // The same rule as `MachineStatus::from_last_seen`, as a query: contact within the window.
    let in_contact = machines::table
        .filter(machines::organization_id.eq(organization_id))
        .filter(machines::removed_at.is_null())
        .filter(machines::last_seen_at.gt(now - offline_after));
    let active: i64 = in_contact.count().get_result(conn)?;
    let busy: i64 = in_contact.filter(machines::current_run_id.is_not_null()).count().get_result(conn)?;
    Ok(ActiveCounts { online: active - busy, busy })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_last_contact_and_running_job() {
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap().naive_utc();
        let window = chrono::Duration::seconds(30);
        let recent = Some(now - chrono::Duration::seconds(5));
        let stale = Some(now - chrono::Duration::seconds(30));
        assert_eq!(MachineStatus::from_last_seen(recent, false, now, window), MachineStatus::Online);
        assert_eq!(MachineStatus::from_last_seen(recent, true, now, window), MachineStatus::Busy);
        assert_eq!(MachineStatus::from_last_seen(stale, true, now, window), MachineStatus::Offline);
        assert_eq!(MachineStatus::from_last_seen(None, false, now, window), MachineStatus::Offline);
    }
}
