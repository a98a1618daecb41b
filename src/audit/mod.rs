//! The audit log: who did what to which object, when and from where.
//!
//! - [`Action`]: what was done, stored as fixed text.
//! - [`history`]: the recorded events read back, a page at a time, filtered.

mod action;
pub mod history;

pub use action::Action;

use diesel::prelude::*;

use crate::db::DbConnection;
use crate::db::schema::audit_events;
use crate::users::Role;

/// Who did something from the dashboard, for the audit log, with the role that decides what they may
/// do to objects others created.
#[derive(Clone, Debug)]
pub struct Actor {
    pub user_id: i64,
    pub email: String,
    pub role: Role,
    pub source_ip: Option<String>,
}

impl Actor {
    /// Whether this actor may revoke (or roll) a key or token created by `created_by`.
    pub fn may_revoke(&self, created_by: Option<i64>) -> bool {
        self.role.may_revoke(self.user_id, created_by)
    }

    /// An event by this actor in `organization_id` about `target_type` #`target_id`.
    pub fn event<'a>(
        &'a self,
        organization_id: i64,
        action: Action,
        target_type: &'a str,
        target_id: impl ToString,
        details: serde_json::Value,
    ) -> Event<'a> {
        Event {
            organization_id: Some(organization_id),
            actor_user_id: Some(self.user_id),
            actor: &self.email,
            action,
            target_type,
            target_id: Some(target_id.to_string()),
            source_ip: self.source_ip.as_deref(),
            details,
        }
    }
}

/// One event to record. `actor` is a readable label (an email, `system`, a machine name) kept even if the
/// user is deleted later.
pub struct Event<'a> {
    pub organization_id: Option<i64>,
    pub actor_user_id: Option<i64>,
    pub actor: &'a str,
    pub action: Action,
    pub target_type: &'a str,
    pub target_id: Option<String>,
    pub source_ip: Option<&'a str>,
    pub details: serde_json::Value,
}

pub fn record(conn: &mut DbConnection, event: Event<'_>) -> QueryResult<()> {
    diesel::insert_into(audit_events::table)
        .values((
            audit_events::organization_id.eq(event.organization_id),
            audit_events::actor_user_id.eq(event.actor_user_id),
            audit_events::actor.eq(event.actor),
            audit_events::action.eq(event.action.as_str()),
            audit_events::target_type.eq(event.target_type),
            audit_events::target_id.eq(event.target_id),
            audit_events::source_ip.eq(event.source_ip),
            audit_events::details.eq(event.details.to_string()),
            audit_events::created_at.eq(chrono::Utc::now().naive_utc()),
        ))
        .execute(conn)?;
    Ok(())
}
