//! Sign-in throttling. A password check costs about 19 MiB and tens of milliseconds (Argon2id), so
//! a flood of guesses must neither exhaust memory nor slow everyone else: only a few checks run at
//! once ([`PasswordChecks`], sized to the machine; beyond it a sign-in is answered 429 at once), and
//! a client that keeps failing waits longer and longer before its next guess is even checked.
//!
//! Failures are counted in the database, so every replica throttles the same guesser: per client
//! address, and per account from that address. After [`FREE_FAILURES`] the wait doubles with each
//! further failure, up to [`LONGEST_WAIT`]; a quiet [`FORGIVEN_AFTER`] forgets them. Nothing locks
//! an account as such: its owner signs in from another address as usual.

use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::db::schema::sign_in_failures;
use crate::db::{DbConnection, write_transaction};
use crate::ops::client_address::subscriber_block;
use crate::secret::sha256_hex;

/// Failures allowed for one account from one address before any wait.
pub const FREE_FAILURES: i32 = 5;
/// Failures allowed from one address, whatever the account, before any wait: more, since many
/// people may share an address (an office behind one NAT).
pub const FREE_FAILURES_PER_ADDRESS: i32 = 20;
/// The longest wait between guesses.
pub const LONGEST_WAIT: Duration = Duration::from_secs(15 * 60);
/// Failures older than this are forgotten.
pub const FORGIVEN_AFTER: chrono::Duration = chrono::Duration::hours(1);

/// Who a sign-in counts against: the client address, and the account from that address. Both are
/// hashed (no address or email is stored in plain text). An IPv6 client counts by its /64, the
/// block one subscriber usually holds.
pub fn subjects(email: &str, ip: Option<&str>) -> [String; 2] {
    let ip = match ip.map(str::parse::<std::net::IpAddr>) {
        Some(Ok(ip)) => match subscriber_block(ip) {
            std::net::IpAddr::V6(block) => format!("{block}/64"),
            v4 => v4.to_string(),
        },
        _ => ip.unwrap_or("unknown").to_owned(),
    };
    [
        sha256_hex(&format!("ip\u{1f}{ip}")),
        sha256_hex(&format!(
            "account\u{1f}{}\u{1f}{ip}",
            email.trim().to_lowercase()
        )),
    ]
}

/// How long the wait is after `failures` failures of a subject allowed `free` of them.
fn wait_after(failures: i32, free: i32) -> Duration {
    let over = failures - free;
    if over < 0 {
        return Duration::ZERO;
    }
    Duration::from_secs(1u64 << over.min(20)).min(LONGEST_WAIT)
}

/// How much longer the client must wait before its next guess is checked; `None` if it need not.
pub fn wait_remaining(
    conn: &mut DbConnection,
    subjects: &[String],
    now: NaiveDateTime,
) -> QueryResult<Option<Duration>> {
    let rows: Vec<(String, i32, NaiveDateTime)> = sign_in_failures::table
        .filter(sign_in_failures::subject.eq_any(subjects))
        .filter(sign_in_failures::last_failed_at.gt(now - FORGIVEN_AFTER))
        .select((
            sign_in_failures::subject,
            sign_in_failures::failures,
            sign_in_failures::last_failed_at,
        ))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(subject, failures, last)| {
            let free = if subjects.first() == Some(&subject) {
                FREE_FAILURES_PER_ADDRESS
            } else {
                FREE_FAILURES
            };
            let until = last + chrono::Duration::from_std(wait_after(failures, free)).ok()?;
            (until > now).then(|| (until - now).to_std().ok()).flatten()
        })
        .max())
}

/// Counts a failed sign-in against each subject.
pub fn failed(conn: &mut DbConnection, subjects: &[String], now: NaiveDateTime) -> QueryResult<()> {
    write_transaction(conn, |conn| {
        // Forgotten failures go (theirs start again from one), so guesses sprayed over many
        // addresses or accounts do not pile up.
        diesel::delete(
            sign_in_failures::table
                .filter(sign_in_failures::last_failed_at.le(now - FORGIVEN_AFTER)),
        )
        .execute(conn)?;
        for subject in subjects {
            // One statement, so failures counted at once on two replicas both count.
            macro_rules! count {
                ($conn:expr) => {
                    diesel::insert_into(sign_in_failures::table)
                        .values((
                            sign_in_failures::subject.eq(subject),
                            sign_in_failures::failures.eq(1),
                            sign_in_failures::last_failed_at.eq(now),
                        ))
                        .on_conflict(sign_in_failures::subject)
                        .do_update()
                        .set((
                            sign_in_failures::failures.eq(sign_in_failures::failures + 1),
                            sign_in_failures::last_failed_at.eq(now),
                        ))
                        .execute($conn)
                };
            }
            match conn {
                DbConnection::Sqlite(conn) => count!(conn)?,
                DbConnection::Postgres(conn) => count!(conn)?,
            };
        }
        Ok(())
    })
}

/// A successful sign-in clears the account's failures from that address (the address's own count
/// stays: a guesser that hits one account's password is still throttled on the others).
pub fn succeeded(conn: &mut DbConnection, subjects: &[String]) -> QueryResult<()> {
    diesel::delete(
        sign_in_failures::table.filter(sign_in_failures::subject.eq_any(&subjects[1..])),
    )
    .execute(conn)?;
    Ok(())
}

/// Where passwords are checked and hashed (sign-in, setup, a password change): at most one at a time
/// per processor (each takes a processor and ~19 MiB), on a few long-lived threads at the lowest
/// scheduling priority. Hashing takes what processor time everyone else's requests leave over, so a
/// flood of guesses slows the guesses, not the APIs; and the same few threads reuse the same memory
/// (a new thread per check would leave ~19 MiB behind in each of the allocator's per-thread arenas).
pub struct PasswordChecks {
    turns: Arc<Semaphore>,
    work: std::sync::mpsc::Sender<Job>,
}

type Job = Box<dyn FnOnce() + Send>;

/// A turn to check a password, from [`PasswordChecks::try_begin`].
pub struct Turn {
    permit: OwnedSemaphorePermit,
    work: std::sync::mpsc::Sender<Job>,
}

impl Default for PasswordChecks {
    fn default() -> Self {
        let processors = std::thread::available_parallelism().map_or(2, usize::from);
        let (work, jobs) = std::sync::mpsc::channel::<Job>();
        let jobs = Arc::new(std::sync::Mutex::new(jobs));
        for _ in 0..processors {
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name("password-check".into())
                .spawn(move || {
                    lowest_priority();
                    loop {
                        let job = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match job {
                            // A check that panics fails its sign-in (its answer channel drops), not
                            // the thread: the pool stays its size.
                            Ok(job) => {
                                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                            }
                            // Every sender gone: the server has stopped.
                            Err(_) => return,
                        }
                    }
                })
                .expect("a thread for password checks");
        }
        Self {
            turns: Arc::new(Semaphore::new(processors)),
            work,
        }
    }
}

impl PasswordChecks {
    /// A turn to check a password, or `None` at once when every turn is taken.
    pub fn try_begin(&self) -> Option<Turn> {
        let permit = self.turns.clone().try_acquire_owned().ok()?;
        Some(Turn {
            permit,
            work: self.work.clone(),
        })
    }
}

impl Turn {
    /// Runs `work` (hashing) on one of the password threads and answers its result. The turn ends
    /// with the work, even if the request has gone meanwhile (a hash cannot be stopped half-way).
    pub async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let permit = self.permit;
        self.work
            .send(Box::new(move || {
                let _permit = permit;
                let _ = tx.send(work());
            }))
            .map_err(|_| anyhow::anyhow!("the password threads have stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the password check stopped"))
    }
}

/// Gives the calling thread the lowest scheduling priority (nice 19). On Linux the nice value is
/// per thread; elsewhere this does nothing.
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread's own id; failure only leaves the priority.
    unsafe {
        let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread, 19);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_that_panics_fails_alone_and_the_threads_go_on() {
        actix_web::rt::System::new().block_on(async {
            let checks = PasswordChecks::default();
            let processors = std::thread::available_parallelism().map_or(2, usize::from);
            for _ in 0..processors {
                let failed = checks
                    .try_begin()
                    .unwrap()
                    .run(|| -> bool { panic!("a broken hash") })
                    .await;
                assert!(failed.is_err());
            }
            let answered = checks.try_begin().unwrap().run(|| 42).await.unwrap();
            assert_eq!(answered, 42, "every thread survived its panic");
        });
    }

    #[test]
    fn the_wait_doubles_after_the_free_failures_and_is_capped() {
        assert_eq!(wait_after(1, 5), Duration::ZERO);
        assert_eq!(wait_after(4, 5), Duration::ZERO);
        assert_eq!(wait_after(5, 5), Duration::from_secs(1));
        assert_eq!(wait_after(6, 5), Duration::from_secs(2));
        assert_eq!(wait_after(10, 5), Duration::from_secs(32));
        assert_eq!(wait_after(19, 20), Duration::ZERO);
        assert_eq!(wait_after(40, 5), LONGEST_WAIT);
        assert_eq!(wait_after(i32::MAX, 5), LONGEST_WAIT);
    }

    #[test]
    fn subjects_hide_who_and_where() {
        let [ip, account] = subjects("Admin@Example.com ", Some("203.0.113.5"));
        assert_eq!(
            subjects("admin@example.com", Some("203.0.113.5"))[1],
            account
        );
        assert_ne!(subjects("admin@example.com", Some("203.0.113.6"))[0], ip);
        assert!(!ip.contains("203.0") && !account.contains("admin"));
        let v6 = subjects("a@example.com", Some("2001:db8:1:2:aaaa::1"));
        assert_eq!(
            subjects("a@example.com", Some("2001:db8:1:2:ffff::9")),
            v6,
            "one /64"
        );
        assert_ne!(subjects("a@example.com", Some("2001:db8:1:3::1")), v6);
    }
}
