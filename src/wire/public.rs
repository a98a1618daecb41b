//! Bodies and query of the public API (`X-Granite-API-Key`).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::OrganizationRef;
use crate::status::RunStatus;

/// `GET /api/me`: who this key is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MeResponse {
    pub organization: OrganizationRef,
    pub key: KeyRef,
}

/// An API key as its holder may see it: never the secret, only its hint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyRef {
    pub id: i64,
    pub name: String,
    /// The prefix and the first 4 random characters, e.g. `gk_live_a1B2…`.
    pub hint: String,
}

/// The query of `POST /api/{org}/{endpoint}`. An empty value (`priority=`) is the default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StartRunQuery {
    /// Capabilities a machine must have, comma-separated (`windows,chrome`).
    pub requires: Option<String>,
    /// Higher runs first; -1000000 to 1000000, default 0.
    #[serde(default, deserialize_with = "empty_as_default")]
    pub priority: Option<i32>,
    /// `true`: answer when the run has finished (200) or at the timeout (202).
    #[serde(default, deserialize_with = "empty_as_default")]
    pub wait: Option<bool>,
    /// Seconds to wait with `wait=true`: 1 to 300, default 300.
    #[serde(default, deserialize_with = "empty_as_default")]
    pub timeout: Option<u64>,
}

/// A query value: empty means absent; otherwise it must parse, and the error says what was expected
/// (never the value, which is the caller's).
fn empty_as_default<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr + Expected,
{
    let text = String::deserialize(deserializer)?;
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("invalid value, expected {}", T::EXPECTED)))
}

/// How a query value's type is described in errors.
trait Expected {
    const EXPECTED: &'static str;
}

impl Expected for i32 {
    const EXPECTED: &'static str = "a whole number";
}

impl Expected for u64 {
    const EXPECTED: &'static str = "a whole number of seconds";
}

impl Expected for bool {
    const EXPECTED: &'static str = "true or false";
}

/// `POST /api/{org}/{endpoint}` without `wait=true`: the run is stored and queued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueuedResponse {
    #[serde(rename = "runId")]
    pub run_id: String,
    /// Always `queued`.
    pub status: RunStatus,
    pub message: String,
}

/// `GET /api/queue`: queue status of the key's organization.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueueStatusResponse {
    /// Runs queued now.
    pub jobs_queued: i64,
    /// Runs running now.
    pub jobs_running: i64,
    /// Mean wait of the runs started in the last 60 minutes; null when none started.
    pub avg_wait_seconds: Option<f64>,
    /// Age of the oldest queued run; null when none is queued.
    pub oldest_queued_seconds: Option<f64>,
    /// Machines Online or Busy now.
    pub active_drivers: i64,
    /// Machines Busy now.
    pub busy_drivers: i64,
}
