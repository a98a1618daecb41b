//! The driver API as a client sees it: enroll, heartbeat, claim, complete, release.

use std::time::Duration;

use serde_json::{Value, json};

use crate::runs::Outcome;

/// How a call went wrong: the server could not be reached, or it answered with a contract error.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    #[error("{message} ({code})")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
}

impl CallError {
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused { code, .. } => Some(code),
            Self::Unreachable(_) => None,
        }
    }

    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable(_))
            || matches!(self, Self::Refused { status, .. } if *status >= 500)
    }
}

pub struct Enrollment {
    pub machine_id: i64,
    pub credential: String,
    pub organization_slug: String,
    pub heartbeat_interval_seconds: u64,
}

pub struct Heartbeat {
    pub interval: Duration,
    pub cancel: Vec<String>,
}

/// A run handed to this machine.
#[derive(Clone, Debug)]
pub struct Job {
    pub run_id: String,
    pub endpoint: String,
    pub parameters: Value,
}

pub struct DriverClient {
    server: String,
    credential: Option<String>,
    agent: ureq::Agent,
}

impl DriverClient {
    pub fn new(server: &str, credential: Option<String>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .user_agent(concat!("granite-driver/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self {
            server: server.trim_end_matches('/').to_owned(),
            credential,
            agent,
        }
    }

    fn post(&self, path: &str, body: &Value) -> Result<(u16, Value), CallError> {
        let mut request = self.agent.post(format!("{}{path}", self.server));
        if let Some(credential) = &self.credential {
            request = request.header("Authorization", format!("Bearer {credential}"));
        }
        let mut response = request
            .send_json(body)
            .map_err(|e| CallError::Unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        if status >= 400 {
            return Err(CallError::Refused {
                status,
                code: value["error"].as_str().unwrap_or("http_error").to_owned(),
                message: value["message"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("HTTP {status}")),
            });
        }
        Ok((status, value))
    }

    pub fn enroll(
        &self,
        token: &str,
        name: &str,
        os_version: &str,
        capabilities: &[String],
    ) -> Result<Enrollment, CallError> {
        let body = json!({
            "token": token, "name": name, "os_version": os_version, "capabilities": capabilities,
            "driver_version": env!("CARGO_PKG_VERSION"),
        });
        let (_, value) = self.post("/api/v1/driver/enroll", &body)?;
        Ok(Enrollment {
            machine_id: value["machine_id"].as_i64().unwrap_or_default(),
            credential: value["credential"].as_str().unwrap_or_default().to_owned(),
            organization_slug: value["organization"]["slug"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            heartbeat_interval_seconds: value["heartbeat_interval_seconds"].as_u64().unwrap_or(10),
        })
    }

    pub fn heartbeat(&self, current_run_id: Option<&str>) -> Result<Heartbeat, CallError> {
        let body = json!({ "status": if current_run_id.is_some() { "busy" } else { "idle" }, "current_run_id": current_run_id });
        let (_, value) = self.post("/api/v1/driver/heartbeat", &body)?;
        Ok(Heartbeat {
            interval: Duration::from_secs(
                value["heartbeat_interval_seconds"]
                    .as_u64()
                    .unwrap_or(10)
                    .max(1),
            ),
            cancel: value["cancel"]
                .as_array()
                .map(|ids| {
                    ids.iter()
                        .filter_map(|id| id.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// The next job, waiting up to `wait_seconds` for one.
    pub fn claim(&self, wait_seconds: u64) -> Result<Option<Job>, CallError> {
        let (status, value) = self.post(
            "/api/v1/driver/jobs/claim",
            &json!({ "wait_seconds": wait_seconds }),
        )?;
        if status == 204 {
            return Ok(None);
        }
        Ok(Some(Job {
            run_id: value["runId"].as_str().unwrap_or_default().to_owned(),
            endpoint: value["endpoint"].as_str().unwrap_or_default().to_owned(),
            parameters: value["parameters"].clone(),
        }))
    }

    pub fn complete(&self, run_id: &str, outcome: &Outcome) -> Result<(), CallError> {
        let error = outcome
            .error
            .as_ref()
            .map(|(kind, message)| json!({ "type": kind, "message": message }));
        let body = json!({
            "status": if outcome.succeeded { "completed" } else { "failed" },
            "result": outcome.result,
            "error": error,
        });
        self.post(&format!("/api/v1/driver/jobs/{run_id}/complete"), &body)
            .map(|_| ())
    }

    pub fn release(&self, run_id: &str) -> Result<(), CallError> {
        self.post(&format!("/api/v1/driver/jobs/{run_id}/release"), &json!({}))
            .map(|_| ())
    }
}
