//! The driver API as a client sees it: enroll, heartbeat, claim, complete, release.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::runs::Outcome;
use crate::status::ReportedStatus;
use crate::wire::driver::{
    ClaimRequest, EnrollRequest, EnrollResponse, HeartbeatRequest, HeartbeatResponse,
};
use crate::wire::{ErrorBody, RunObject};

/// How a call went wrong: the server could not be reached, or it answered with a contract error.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    /// The server answered with something that is not the contract's shape.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
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
            Self::Unreachable(_) | Self::Unexpected(_) => None,
        }
    }

    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable(_))
            || matches!(self, Self::Refused { status, .. } if *status >= 500)
    }
}

/// What a driver tells the server about itself when it starts.
#[derive(Clone, Debug, Default)]
pub struct Announcement {
    /// Replaces the machine's capabilities; `None` keeps those it enrolled with.
    pub capabilities: Option<Vec<String>>,
    pub os_version: Option<String>,
    pub driver_version: Option<String>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Announcement {
    /// This process, now: its OS, its version, and the capabilities given (plus the OS family).
    pub fn of_this_process(capabilities: &[String]) -> Self {
        Self {
            capabilities: (!capabilities.is_empty()).then(|| super::capabilities(capabilities)),
            os_version: Some(super::os_version()),
            driver_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            started_at: Some(chrono::Utc::now()),
        }
    }
}

/// A run handed to this machine.
#[derive(Clone, Debug)]
pub struct Job {
    pub run_id: String,
    pub endpoint: String,
    pub parameters: Value,
}

impl From<RunObject> for Job {
    fn from(run: RunObject) -> Self {
        Self {
            run_id: run.run_id,
            endpoint: run.endpoint,
            parameters: run.parameters,
        }
    }
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

    /// Posts `body` and reads the answer as `R`; `None` for 204 No Content.
    fn post<R: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<Option<R>, CallError> {
        let mut request = self.agent.post(format!("{}{path}", self.server));
        if let Some(credential) = &self.credential {
            request = request.header("Authorization", format!("Bearer {credential}"));
        }
        let mut response = request
            .send_json(body)
            .map_err(|e| CallError::Unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        if status >= 400 {
            let error: Option<ErrorBody> = serde_json::from_str(&text).ok();
            return Err(CallError::Refused {
                status,
                code: error
                    .as_ref()
                    .map_or_else(|| "http_error".to_owned(), |e| e.error.clone()),
                message: error.map_or_else(|| format!("HTTP {status}"), |e| e.message),
            });
        }
        if status == 204 {
            return Ok(None);
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| CallError::Unexpected(format!("{path} answered {status} with {e}")))
    }

    fn expect<R>(answer: Option<R>, path: &str) -> Result<R, CallError> {
        answer.ok_or_else(|| CallError::Unexpected(format!("{path} answered with no body")))
    }

    pub fn enroll(
        &self,
        token: &str,
        name: &str,
        os_version: &str,
        capabilities: &[String],
    ) -> Result<EnrollResponse, CallError> {
        let body = EnrollRequest {
            token: token.to_owned(),
            name: name.to_owned(),
            os_version: os_version.to_owned(),
            ip_address: None,
            capabilities: capabilities.to_vec(),
            driver_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let path = "/api/v1/driver/enroll";
        // A roll-out enrolling many machines through one address at once may be asked to wait a
        // moment (429); anything else is the answer.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.post(path, &body) {
                Err(CallError::Refused { status: 429, .. }) if attempts < 10 => {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
                answer => return Self::expect(answer?, path),
            }
        }
    }

    /// A heartbeat reporting the run being run, and, when given, what the driver announces about
    /// itself (its first heartbeat after starting).
    pub fn heartbeat(
        &self,
        current_run_id: Option<&str>,
        announcement: Option<&Announcement>,
    ) -> Result<HeartbeatResponse, CallError> {
        let announcement = announcement.cloned().unwrap_or_default();
        let body = HeartbeatRequest {
            status: if current_run_id.is_some() {
                ReportedStatus::Busy
            } else {
                ReportedStatus::Idle
            },
            current_run_id: current_run_id.map(str::to_owned),
            capabilities: announcement.capabilities,
            os_version: announcement.os_version,
            driver_version: announcement.driver_version,
            started_at: announcement.started_at,
        };
        let path = "/api/v1/driver/heartbeat";
        Self::expect(self.post(path, &body)?, path)
    }

    /// The next job, waiting up to `wait_seconds` for one.
    pub fn claim(&self, wait_seconds: u64) -> Result<Option<Job>, CallError> {
        let body = ClaimRequest {
            wait_seconds: Some(wait_seconds),
        };
        let run: Option<RunObject> = self.post("/api/v1/driver/jobs/claim", &body)?;
        Ok(run.map(Job::from))
    }

    pub fn complete(&self, run_id: &str, outcome: &Outcome) -> Result<(), CallError> {
        self.post::<RunObject>(
            &format!("/api/v1/driver/jobs/{run_id}/complete"),
            &outcome.to_wire(),
        )
        .map(|_| ())
    }

    pub fn release(&self, run_id: &str) -> Result<(), CallError> {
        self.post::<RunObject>(
            &format!("/api/v1/driver/jobs/{run_id}/release"),
            &serde_json::Map::new(),
        )
        .map(|_| ())
    }
}
