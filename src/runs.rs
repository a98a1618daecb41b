//! Runs (the jobs of the public API, "agent runs"): what the dashboard shows of them so far.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConnection;
use crate::db::schema::runs;

/// A run as lists show it.
#[derive(Clone, Debug, Queryable)]
pub struct RunSummary {
    pub id: i64,
    pub public_id: String,
    pub endpoint: String,
    pub status: String,
    pub created_at: NaiveDateTime,
    pub started_at: Option<NaiveDateTime>,
    pub finished_at: Option<NaiveDateTime>,
    pub error_message: Option<String>,
}

type SummaryColumns = (
    runs::id,
    runs::public_id,
    runs::endpoint,
    runs::status,
    runs::created_at,
    runs::started_at,
    runs::finished_at,
    runs::error_message,
);

const SUMMARY: SummaryColumns = (
    runs::id,
    runs::public_id,
    runs::endpoint,
    runs::status,
    runs::created_at,
    runs::started_at,
    runs::finished_at,
    runs::error_message,
);

/// The newest runs a machine took, newest first.
pub fn history_of_machine(conn: &mut DbConnection, machine_id: i64, limit: i64) -> QueryResult<Vec<RunSummary>> {
    runs::table
        .filter(runs::machine_id.eq(machine_id))
        .order((runs::created_at.desc(), runs::id.desc()))
        .limit(limit)
        .select(SUMMARY)
        .load(conn)
}

/// The runs with these ids (the Current Job of a page of machines).
pub fn summaries(conn: &mut DbConnection, ids: &[i64]) -> QueryResult<Vec<RunSummary>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    runs::table.filter(runs::id.eq_any(ids)).select(SUMMARY).load(conn)
}
