//! Running an automation: the executable named like the job's endpoint in the automations folder, with
//! the job's parameters as JSON on stdin and a time limit. Its stdout, as JSON, is the result; a non-zero
//! exit or the time limit is a failure carrying the tail of its stderr.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Executor;
use super::client::Job;
use crate::runs::Outcome;

const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
const STDERR_TAIL_BYTES: usize = 2000;

/// The folder of automations, resolved once at start: an absolute path (a relative one is taken from
/// where the driver was started), which holds at least one executable.
#[derive(Clone, Debug)]
pub struct AutomationFolder {
    path: PathBuf,
    found: Vec<String>,
}

impl AutomationFolder {
    pub fn open(given: &Path) -> Result<Self, String> {
        let path = std::path::absolute(given)
            .and_then(|p| p.canonicalize())
            .map_err(|e| {
                format!(
                    "the automations folder {} cannot be used: {e}",
                    given.display()
                )
            })?;
        let entries = std::fs::read_dir(&path)
            .map_err(|e| format!("{} is not a folder of automations: {e}", given.display()))?;
        let mut found: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|entry| is_executable(&entry.path()))
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect();
        found.sort();
        if found.is_empty() {
            return Err(format!(
                "{} holds no executable: put one file per automation there (e.g. {}/invoice-sync) \
                 and make it executable (chmod +x)",
                path.display(),
                given.display()
            ));
        }
        Ok(Self { path, found })
    }

    /// Where the automations are, absolute.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The automations found at start, by name.
    pub fn found(&self) -> &[String] {
        &self.found
    }
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

pub struct ProcessExecutor {
    pub folder: AutomationFolder,
    pub time_limit: Duration,
}

fn failure(kind: &str, message: String) -> Outcome {
    Outcome {
        succeeded: false,
        result: None,
        error: Some((kind.to_owned(), message)),
    }
}

fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(STDERR_TAIL_BYTES);
    String::from_utf8_lossy(&bytes[start..]).trim().to_owned()
}

impl Executor for ProcessExecutor {
    fn execute(&self, job: &Job, interrupt: &AtomicBool) -> Outcome {
        // Endpoints are slugs (a-z, 0-9, -), so this cannot leave the folder.
        let directory = self.folder.path();
        let program = directory.join(&job.endpoint);
        if !program.is_file() {
            return failure(
                "unknown_automation",
                format!(
                    "No automation named \"{}\" on this machine (looked for {}).",
                    job.endpoint,
                    program.display()
                ),
            );
        }
        let mut child = match Command::new(&program)
            .current_dir(directory)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                return failure(
                    "start_failed",
                    format!("Could not start {}: {e}", program.display()),
                );
            }
        };
        let input = job.parameters.to_string();
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let out_reader = std::thread::spawn(move || {
            let mut buffer = Vec::new();
            let _ = stdout
                .by_ref()
                .take(MAX_OUTPUT_BYTES as u64 + 1)
                .read_to_end(&mut buffer);
            buffer
        });
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let err_reader = std::thread::spawn(move || {
            let mut buffer = Vec::new();
            let _ = stderr.read_to_end(&mut buffer);
            buffer
        });
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) => {}
                Err(_) => break None,
            }
            if interrupt.load(Ordering::Relaxed) || started.elapsed() > self.time_limit {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = writer.join();
        let output = out_reader.join().unwrap_or_default();
        let errors = err_reader.join().unwrap_or_default();
        match status {
            None if interrupt.load(Ordering::Relaxed) => {
                failure("interrupted", "The automation was stopped.".into())
            }
            None => failure(
                "timeout",
                format!(
                    "Stopped after the time limit of {} s. stderr: {}",
                    self.time_limit.as_secs(),
                    tail(&errors)
                ),
            ),
            Some(status) if !status.success() => failure(
                "exit_status",
                format!("Exited with {}. stderr: {}", status, tail(&errors)),
            ),
            Some(_) if output.len() > MAX_OUTPUT_BYTES => failure(
                "output_too_large",
                "The automation printed more than 1 MiB.".into(),
            ),
            Some(_) => {
                let text = String::from_utf8_lossy(&output);
                if text.trim().is_empty() {
                    return Outcome {
                        succeeded: true,
                        result: None,
                        error: None,
                    };
                }
                match serde_json::from_str::<Value>(text.trim()) {
                    Ok(result) => Outcome {
                        succeeded: true,
                        result: Some(result),
                        error: None,
                    },
                    Err(e) => failure(
                        "invalid_output",
                        format!("The automation's output is not JSON ({e})."),
                    ),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_folder_is_resolved_once_and_must_hold_an_executable() {
        let root = std::env::temp_dir().join(format!(
            "granite-automations-{}",
            crate::secret::random_base62(12)
        ));
        std::fs::create_dir_all(root.join("empty")).unwrap();
        let missing = AutomationFolder::open(&root.join("missing")).unwrap_err();
        assert!(missing.contains("cannot be used"), "{missing}");
        let empty = AutomationFolder::open(&root.join("empty")).unwrap_err();
        assert!(empty.contains("holds no executable"), "{empty}");

        let folder = root.join("automations");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("notes.txt"), "not an automation").unwrap();
        let script = folder.join("invoice-sync");
        std::fs::write(&script, "#!/bin/sh\ncat\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let opened = AutomationFolder::open(&folder).unwrap();
        assert!(opened.path().is_absolute());
        assert_eq!(opened.found(), ["invoice-sync"]);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
