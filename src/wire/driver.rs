//! Bodies of the driver API (enrollment token, then `Authorization: Bearer gd_…`).
//!
//! The types that carry a secret (the token, the credential) implement no `Debug`, so no log line can
//! print them by accident.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{OrganizationRef, RunErrorBody};
use crate::status::{ReportedStatus, RunStatus};

/// `POST /api/v1/driver/enroll`.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct EnrollRequest {
    /// The one-time enrollment token, `enroll_…`.
    pub token: String,
    /// The machine's name in the dashboard: 1 to 100 characters.
    pub name: String,
    #[serde(default)]
    pub os_version: String,
    /// The address to show, optionally with the port the driver listens on ("10.0.0.5:5000"); the
    /// request's own address when absent.
    #[serde(default)]
    pub ip_address: Option<String>,
    /// What the machine can run: up to 32 names of letters, digits and `._:+-`.
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub driver_version: String,
}

/// The answer to an enrollment: the machine's credential, shown this once.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct EnrollResponse {
    pub machine_id: i64,
    /// `gd_…`: every later call sends it as `Authorization: Bearer`.
    pub credential: String,
    pub organization: OrganizationRef,
    pub heartbeat_interval_seconds: u64,
}

/// `POST /api/v1/driver/heartbeat`. The driver's first heartbeat after it starts also announces what
/// it is (capabilities, OS, version, start time); each announced field replaces what the server knew.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatRequest {
    pub status: ReportedStatus,
    /// The run the driver is running, if any. The server takes back a run it gave this machine that
    /// is not named here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_run_id: Option<String>,
    /// Replaces the machine's capabilities (up to 32 names of letters, digits and `._:+-`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    /// When the driver process started (RFC 3339), for the machine's uptime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatResponse {
    /// When to send the next heartbeat.
    pub heartbeat_interval_seconds: u64,
    /// Runs the driver must stop: cancelled by their callers, or no longer this machine's.
    #[serde(default)]
    pub cancel: Vec<String>,
    /// An admin paused the machine: finish the current run; claims answer 204 until it is resumed.
    #[serde(default)]
    pub paused: bool,
}

/// `POST /api/v1/driver/jobs/claim`. An empty body is `{}`: take a run if one is ready, without waiting.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClaimRequest {
    /// Long-poll up to this many seconds (0 to 30) for a run.
    #[serde(default)]
    pub wait_seconds: Option<u64>,
}

/// How a machine ends a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Completion {
    Completed,
    Failed,
}

impl Completion {
    pub fn status(self) -> RunStatus {
        match self {
            Self::Completed => RunStatus::Completed,
            Self::Failed => RunStatus::Failed,
        }
    }
}

/// `POST /api/v1/driver/jobs/{runId}/complete`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CompleteRequest {
    pub status: Completion,
    /// What the automation returned (any JSON).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    #[serde(default)]
    pub error: Option<RunErrorBody>,
}
