//! The wire format of the public and driver APIs: every request and response body, exactly as clients
//! see it. The server's handlers and the reference driver (`granite driver`) both use these types, and
//! the OpenAPI document (`GET /api/openapi.json`) is generated from them, so the three cannot drift.
//!
//! Readers are lenient and writers are exact: unknown fields are ignored, absent values are written as
//! `null`, and the field names are the contract's (camelCase in run objects, snake_case elsewhere).

pub mod driver;
pub mod public;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use utoipa::ToSchema;

use crate::status::RunStatus;

/// Every error of both APIs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"error": "invalid_request", "message": "priority: expected i32.", "code": 400, "field": "priority"}))]
pub struct ErrorBody {
    /// A stable, machine-readable code such as `invalid_api_key` or `not_found`.
    pub error: String,
    /// A sentence for people.
    pub message: String,
    /// The HTTP status, repeated.
    pub code: u16,
    /// For `invalid_request`: the field of the body or query that was wrong, when one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An organization, as a key or a machine belongs to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrganizationRef {
    pub id: i64,
    /// The `{org}` of `POST /api/{org}/{endpoint}`.
    pub slug: String,
    pub name: String,
}

/// Why a run failed, as the driver reported it or as the server decided (`lease_lost`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunErrorBody {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub message: String,
}

/// The run object: what `GET /api/agent-runs/{runId}`, cancel, `wait=true`, a driver's claim and
/// complete all answer with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunObject {
    /// `run_` and 24 base62 characters.
    pub run_id: String,
    /// The automation to run.
    pub endpoint: String,
    pub status: RunStatus,
    /// The JSON object the caller sent as the body.
    #[schema(value_type = Object)]
    pub parameters: Value,
    /// Capabilities a machine must have to take the run.
    pub requires: Vec<String>,
    /// Higher runs first.
    pub priority: i32,
    /// What the automation returned, once completed.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub result: Value,
    pub error: Option<RunErrorBody>,
    /// The machine that ran (or runs) it.
    pub machine_id: Option<i64>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_or_null")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339_or_null")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Milliseconds from start to finish.
    pub duration: Option<i64>,
}

/// Timestamps are RFC 3339 in UTC with milliseconds: `2026-11-30T09:15:02.120Z`.
fn rfc3339<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn rfc3339_or_null<S: Serializer>(
    at: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => rfc3339(at, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_objects_write_every_field_and_read_back() {
        let at = DateTime::parse_from_rfc3339("2026-11-30T09:15:02.120Z")
            .unwrap()
            .with_timezone(&Utc);
        let run = RunObject {
            run_id: "run_abc".into(),
            endpoint: "invoice-sync".into(),
            status: RunStatus::Queued,
            parameters: serde_json::json!({"invoice": 42}),
            requires: vec!["windows".into()],
            priority: 0,
            result: Value::Null,
            error: None,
            machine_id: None,
            created_at: at,
            started_at: None,
            finished_at: None,
            duration: None,
        };
        let text = serde_json::to_value(&run).unwrap();
        assert_eq!(text["createdAt"], "2026-11-30T09:15:02.120Z");
        assert_eq!(text["status"], "queued");
        for field in [
            "runId",
            "endpoint",
            "status",
            "parameters",
            "requires",
            "priority",
            "result",
            "error",
            "machineId",
            "createdAt",
            "startedAt",
            "finishedAt",
            "duration",
        ] {
            assert!(text.get(field).is_some(), "{field} is written");
        }
        assert_eq!(text.as_object().unwrap().len(), 13);
        let mut with_extra = text.clone();
        with_extra["addedLater"] = serde_json::json!(true);
        assert_eq!(
            serde_json::from_value::<RunObject>(with_extra).unwrap(),
            run,
            "unknown fields are ignored"
        );
    }
}
