//! SQLite's write-ahead log is copied back into the database file by a thread of its own, not by the
//! connection that happens to commit when the log is full. A checkpoint writes and syncs thousands of
//! pages: done by the committing connection it stalled that commit — and the intake's whole batch of
//! callers behind it — for tens of milliseconds, and left the writer idle meanwhile.
//!
//! Every [`CHECKPOINT_EVERY`] the thread copies what it can without waiting for anyone (`PASSIVE`).
//! The log only starts again from its beginning once everything in it has been copied; under a steady
//! stream of writes that moment never comes by itself, so once the log holds more than
//! [`RESTART_FROM_FRAMES`] the thread also runs a `RESTART` checkpoint, which holds writers back
//! while it copies the little that the passive one left and waits for readers to move on — at most
//! [`RESTART_WAIT`], or it gives up and tries again on the next round.

use std::sync::Weak;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Integer;

/// How often the log is copied into the database file.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Log size (in pages) from which the log is made to start again at its beginning.
pub const RESTART_FROM_FRAMES: i32 = 4_000;

/// The longest a `RESTART` checkpoint holds writers back waiting for readers.
const RESTART_WAIT: Duration = Duration::from_millis(10);

/// What `PRAGMA wal_checkpoint` reports.
#[derive(QueryableByName, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpointed {
    /// 1 when the checkpoint could not finish (a reader or writer was in the way).
    #[diesel(sql_type = Integer)]
    pub busy: i32,
    /// Pages in the log.
    #[diesel(sql_type = Integer)]
    pub log: i32,
    /// Pages of the log now in the database file.
    #[diesel(sql_type = Integer)]
    pub checkpointed: i32,
}

/// Readies the checkpoint thread's connection: a `RESTART` checkpoint waits for readers at most
/// [`RESTART_WAIT`] (a `PASSIVE` one never waits at all).
pub fn prepare(conn: &mut SqliteConnection) -> QueryResult<()> {
    conn.batch_execute(&format!(
        "PRAGMA busy_timeout = {}",
        RESTART_WAIT.as_millis()
    ))
}

/// One round on a [`prepare`]d connection: a passive checkpoint, then a restarting one if the log has
/// grown long.
pub fn checkpoint(conn: &mut SqliteConnection) -> QueryResult<Checkpointed> {
    let passive: Checkpointed =
        diesel::sql_query("PRAGMA wal_checkpoint(PASSIVE)").get_result(conn)?;
    if passive.log < RESTART_FROM_FRAMES {
        return Ok(passive);
    }
    diesel::sql_query("PRAGMA wal_checkpoint(RESTART)").get_result(conn)
}

/// Checkpoints on `conn` every [`CHECKPOINT_EVERY`] until `alive` is gone.
pub fn spawn(mut conn: SqliteConnection, alive: Weak<()>) {
    std::thread::Builder::new()
        .name("granite-checkpoint".into())
        .spawn(move || {
            if let Err(error) = prepare(&mut conn) {
                tracing::warn!(%error, "could not prepare the SQLite checkpoint connection");
            }
            let mut failing = false;
            while alive.strong_count() > 0 {
                std::thread::sleep(CHECKPOINT_EVERY);
                match checkpoint(&mut conn) {
                    Ok(_) => failing = false,
                    Err(error) if !failing => {
                        failing = true;
                        tracing::warn!(%error, "could not checkpoint the SQLite log");
                    }
                    Err(_) => {}
                }
            }
        })
        .expect("a thread for SQLite checkpoints");
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::db::{DatabaseUrl, DbConnection, Pool};

    fn temp_database() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "granite-checkpoint-{}",
            crate::secret::random_base62(10)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("live.db")
    }

    /// Writes `pages` pages of new rows in one transaction: that many frames in the log.
    fn write_pages(conn: &mut SqliteConnection, pages: usize) {
        conn.batch_execute(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {pages}) \
             INSERT INTO filler SELECT randomblob(3000) FROM n"
        ))
        .unwrap();
    }

    /// Pages in the log now, as a passive checkpoint reports them.
    fn log_pages(conn: &mut SqliteConnection) -> i32 {
        diesel::sql_query("PRAGMA wal_checkpoint(PASSIVE)")
            .get_result::<Checkpointed>(conn)
            .unwrap()
            .log
    }

    fn connect(path: &std::path::Path) -> SqliteConnection {
        let mut conn = SqliteConnection::establish(&path.to_string_lossy()).unwrap();
        conn.batch_execute("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;")
            .unwrap();
        conn
    }

    /// No connection of the pool checkpoints a long log (the backstop is far above it), yet the log
    /// starts again from its beginning: the pool's own thread copied it back and restarted it.
    #[test]
    fn the_pool_copies_a_long_log_back_by_itself() {
        let path = temp_database();
        let pool = Pool::open(&DatabaseUrl::Sqlite(path.clone()), 2).unwrap();
        let mut conn = pool.get().unwrap();
        let DbConnection::Sqlite(sqlite) = &mut *conn else {
            unreachable!()
        };
        sqlite
            .batch_execute("CREATE TABLE filler (b BLOB)")
            .unwrap();
        write_pages(sqlite, 2 * RESTART_FROM_FRAMES as usize);
        std::thread::sleep(CHECKPOINT_EVERY * 10);
        sqlite
            .batch_execute("INSERT INTO filler VALUES (x'00')")
            .unwrap();
        let pages = log_pages(sqlite);
        assert!(
            pages < 10,
            "the log holds {pages} pages: nothing restarted it"
        );
    }

    /// A reader in the middle of a read keeps the log from starting again; the restarting
    /// checkpoint waits for it only briefly, and writers carry on afterwards.
    #[test]
    fn a_reader_holds_writers_back_only_briefly() {
        let path = temp_database();
        let mut writer = connect(&path);
        writer
            .batch_execute("CREATE TABLE filler (b BLOB)")
            .unwrap();
        let mut reader = connect(&path);
        reader
            .batch_execute("BEGIN; SELECT count(*) FROM filler;")
            .unwrap();
        write_pages(&mut writer, RESTART_FROM_FRAMES as usize + 100);
        let mut checkpointer = connect(&path);
        prepare(&mut checkpointer).unwrap();
        let started = Instant::now();
        let done = checkpoint(&mut checkpointer).unwrap();
        assert!(
            started.elapsed() < RESTART_WAIT * 10,
            "{:?}",
            started.elapsed()
        );
        assert_eq!(done.busy, 1, "{done:?}");
        writer
            .batch_execute("PRAGMA busy_timeout = 0; INSERT INTO filler VALUES (x'00')")
            .unwrap();
        reader.batch_execute("COMMIT").unwrap();
        let done = checkpoint(&mut checkpointer).unwrap();
        assert_eq!(done.busy, 0, "{done:?}");
        assert_eq!(done.checkpointed, done.log, "{done:?}");
    }
}
