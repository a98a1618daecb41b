//! The reference driver (`granite driver`): enrolls a machine, then heartbeats, long-polls for jobs and
//! runs them. It outlives server restarts (retrying with backoff and jitter), finishes its job on the
//! first Ctrl-C and gives it back on the second, and stops for good when an admin removes the machine.

pub mod automation;
pub mod client;
pub mod credentials;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::{CallError, DriverClient, Job};

use crate::runs::Outcome;

/// Runs one job. `interrupt` turns true when the job must stop (cancelled, or the driver is stopping).
pub trait Executor: Send + Sync {
    fn execute(&self, job: &Job, interrupt: &AtomicBool) -> Outcome;
}

/// How long a claim waits on the server for a job.
const CLAIM_WAIT_SECONDS: u64 = 25;

/// What the driver's threads share.
#[derive(Default)]
pub struct DriverState {
    /// Stop after the current job (first Ctrl-C).
    pub stopping: AtomicBool,
    /// Stop now and give the job back (second Ctrl-C).
    pub aborting: AtomicBool,
    /// An admin removed this machine.
    pub removed: AtomicBool,
    /// The current job must stop (cancelled by its caller, or aborting).
    pub interrupt: AtomicBool,
    /// An admin paused the machine (the server answers claims with 204 meanwhile).
    pub paused: AtomicBool,
    pub current_run: Mutex<Option<String>>,
    /// What the next heartbeat announces, until one is answered.
    pub announcement: Mutex<Option<client::Announcement>>,
}

impl DriverState {
    /// A Ctrl-C: the first one lets the job finish, the second stops it and gives it back.
    pub fn on_interrupt(&self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            self.aborting.store(true, Ordering::SeqCst);
            self.interrupt.store(true, Ordering::SeqCst);
            eprintln!("granite driver: stopping now; the job goes back to the queue.");
        } else if self
            .current_run
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            eprintln!(
                "granite driver: finishing the current job, then stopping. Press Ctrl-C again to stop now."
            );
        } else {
            eprintln!("granite driver: stopping.");
        }
    }

    fn done(&self) -> bool {
        self.stopping.load(Ordering::SeqCst) || self.removed.load(Ordering::SeqCst)
    }
}

/// Why the driver stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Asked to (Ctrl-C, SIGTERM).
    Interrupted,
    /// An admin removed the machine: its credential is refused for good.
    Removed,
}

pub const REMOVED_MESSAGE: &str = "This machine was removed from Granite by an admin; its credential no longer works. Enroll it again with a new token to bring it back.";

/// Retrying after 0.5 s, 1 s, 2 s … up to 30 s, each ±25 %, so restarted servers are not stormed.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self {
            next: Duration::from_millis(500),
        }
    }

    fn reset(&mut self) {
        self.next = Duration::from_millis(500);
    }

    fn wait(&mut self, state: &DriverState) {
        let mut byte = [0u8; 1];
        let _ = getrandom::fill(&mut byte);
        let jitter = 0.75 + (byte[0] as f64 / 255.0) * 0.5;
        sleep_unless(state, self.next.mul_f64(jitter), |s| {
            s.aborting.load(Ordering::SeqCst)
        });
        self.next = (self.next * 2).min(Duration::from_secs(30));
    }
}

/// Sleeps `duration`, waking early when `until` holds.
fn sleep_unless(state: &DriverState, duration: Duration, until: impl Fn(&DriverState) -> bool) {
    let step = Duration::from_millis(50);
    let mut left = duration;
    while !left.is_zero() && !until(state) {
        let now = left.min(step);
        std::thread::sleep(now);
        left -= now;
    }
}

/// Serves jobs until stopped. Heartbeats run on their own thread at the interval the server asks for.
pub fn run(
    client: Arc<DriverClient>,
    executor: Arc<dyn Executor>,
    state: Arc<DriverState>,
) -> Stopped {
    let heart = {
        let (client, state) = (client.clone(), state.clone());
        std::thread::spawn(move || heartbeat_loop(&client, &state))
    };
    let mut backoff = Backoff::new();
    while !state.done() {
        match claim_unless_stopping(&client, &state) {
            Ok(None) => backoff.reset(),
            Ok(Some(job)) => {
                backoff.reset();
                if state.done() {
                    give_back(&client, &job);
                    break;
                }
                work(&client, executor.as_ref(), &state, job);
            }
            Err(e) if e.code() == Some("machine_removed") => {
                state.removed.store(true, Ordering::SeqCst)
            }
            Err(e) if e.is_unreachable() => {
                tracing::warn!(error = %e, "cannot reach the server; retrying");
                backoff.wait(&state);
            }
            Err(e) => {
                tracing::error!(error = %e, "the server refused this driver");
                backoff.wait(&state);
            }
        }
    }
    state.stopping.store(true, Ordering::SeqCst);
    let _ = heart.join();
    if state.removed.load(Ordering::SeqCst) {
        Stopped::Removed
    } else {
        Stopped::Interrupted
    }
}

/// Long-polls for a job on a helper thread so a Ctrl-C while idle stops the driver at once.
fn claim_unless_stopping(
    client: &Arc<DriverClient>,
    state: &DriverState,
) -> Result<Option<Job>, CallError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let poller = client.clone();
    std::thread::spawn(move || {
        let _ = tx.send(poller.claim(CLAIM_WAIT_SECONDS));
    });
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(answer) => return answer,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(None),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if state.done() => {
                // A job may still arrive in the next instant; give it back if it does.
                return match rx.recv_timeout(Duration::from_millis(500)) {
                    Ok(Ok(Some(job))) => {
                        give_back(client, &job);
                        Ok(None)
                    }
                    _ => Ok(None),
                };
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}

fn work(client: &DriverClient, executor: &dyn Executor, state: &DriverState, job: Job) {
    tracing::info!(run = %job.run_id, automation = %job.endpoint, "running");
    state.interrupt.store(false, Ordering::SeqCst);
    *state.current_run.lock().unwrap_or_else(|e| e.into_inner()) = Some(job.run_id.clone());
    let outcome = executor.execute(&job, &state.interrupt);
    // The run stays reported in heartbeats until the server has its outcome (or it is given back):
    // a heartbeat reporting no run meanwhile would make the server take it back and run it again.
    report(client, state, &job, &outcome);
    *state.current_run.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

fn report(client: &DriverClient, state: &DriverState, job: &Job, outcome: &Outcome) {
    if state.removed.load(Ordering::SeqCst) {
        return; // The server took the job back when the machine was removed.
    }
    if state.aborting.load(Ordering::SeqCst) {
        give_back(client, job);
        return;
    }
    let mut backoff = Backoff::new();
    // What the server is told instead, once it refused the automation's own outcome.
    let mut instead: Option<Outcome> = None;
    loop {
        let outcome = instead.as_ref().unwrap_or(outcome);
        match client.complete(&job.run_id, outcome) {
            Ok(()) => {
                tracing::info!(run = %job.run_id, succeeded = outcome.succeeded, "reported");
                return;
            }
            // The outcome itself was refused (text the server cannot store, say): retrying would
            // be refused again, so the run is reported failed, with the server's reason and none
            // of the automation's text.
            Err(CallError::Refused {
                status: 400,
                message,
                ..
            }) if instead.is_none() => {
                tracing::error!(run = %job.run_id, reason = %message, "the server refused the automation's outcome; reporting the run failed instead");
                instead = Some(Outcome {
                    succeeded: false,
                    result: None,
                    error: Some((
                        "invalid_outcome".to_owned(),
                        format!("The automation's outcome could not be stored: {message}"),
                    )),
                });
            }
            Err(e) if e.code() == Some("machine_removed") => {
                state.removed.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) if e.is_unreachable() && !state.aborting.load(Ordering::SeqCst) => {
                tracing::warn!(error = %e, run = %job.run_id, "cannot report the outcome yet; retrying");
                backoff.wait(state);
            }
            Err(e) => {
                // Cancelled, or taken back by the server while we ran it: nothing more to report.
                tracing::warn!(error = %e, run = %job.run_id, "the server did not take the outcome");
                return;
            }
        }
    }
}

fn give_back(client: &DriverClient, job: &Job) {
    match client.release(&job.run_id) {
        Ok(()) => tracing::info!(run = %job.run_id, "gave the job back to the queue"),
        Err(e) => {
            tracing::warn!(error = %e, run = %job.run_id, "could not give the job back; the server will take it back when this machine goes offline")
        }
    }
}

fn heartbeat_loop(client: &DriverClient, state: &DriverState) {
    let mut backoff = Backoff::new();
    while !state.done() {
        let current = state
            .current_run
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let announcement = state
            .announcement
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match client.heartbeat(current.as_deref(), announcement.as_ref()) {
            Ok(beat) => {
                backoff.reset();
                if announcement.is_some() {
                    *state.announcement.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
                let paused = beat.paused;
                if paused != state.paused.swap(paused, Ordering::SeqCst) {
                    if paused {
                        tracing::info!(
                            "an admin paused this machine: no new jobs until it is resumed"
                        );
                    } else {
                        tracing::info!("an admin resumed this machine");
                    }
                }
                // The job running now, not the one the heartbeat reported: a new job may have started
                // while the answer was on its way, and it must not be stopped for the old one.
                let running = state.current_run.lock().unwrap_or_else(|e| e.into_inner());
                if running
                    .as_ref()
                    .is_some_and(|run| current.as_ref() == Some(run) && beat.cancel.contains(run))
                {
                    tracing::info!(
                        run = running.as_deref().unwrap_or_default(),
                        "the job was cancelled or is no longer this machine's; stopping it"
                    );
                    state.interrupt.store(true, Ordering::SeqCst);
                }
                drop(running);
                sleep_unless(
                    state,
                    Duration::from_secs(beat.heartbeat_interval_seconds.max(1)),
                    DriverState::done,
                );
            }
            Err(e) if e.code() == Some("machine_removed") => {
                state.removed.store(true, Ordering::SeqCst);
                state.interrupt.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed; retrying");
                backoff.wait(state);
            }
        }
    }
}

/// This machine's name for a new enrollment: its host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "driver".into())
}

/// The operating system as people name it ("Debian GNU/Linux 12 (bookworm)"), else its family.
pub fn os_version() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("PRETTY_NAME="))
                .map(|name| name.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| std::env::consts::OS.to_owned())
}

/// The capabilities a driver announces: those it was given, plus the OS it runs on.
pub fn capabilities(given: &[String]) -> Vec<String> {
    let mut all: Vec<String> = given.to_vec();
    let os = std::env::consts::OS.to_owned();
    if !all.contains(&os) {
        all.push(os);
    }
    all
}
