//! `granite backup PATH`: a consistent copy of a live SQLite database, taken while the server runs.
//!
//! SQLite's `VACUUM INTO` reads the database in one read transaction (in WAL mode writers carry on
//! meanwhile) and writes a compact, self-contained file: what was committed when it began, nothing
//! half-written. A PostgreSQL database is backed up with PostgreSQL's own `pg_dump` instead.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use diesel::connection::SimpleConnection;
use diesel::{Connection, RunQueryDsl, SqliteConnection};

use super::DatabaseUrl;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "{0} exists already; a backup never overwrites a file: choose a new path, or move that file away first"
    )]
    TargetExists(PathBuf),
    #[error("the backup path contains a NUL byte")]
    NulInPath,
    #[error("the backup path {0} is not valid UTF-8; choose a path SQLite can be given")]
    PathNotUtf8(PathBuf),
    #[error("cannot create the backup {path}: {source}")]
    CreateTarget {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("there is no SQLite database at {0} (set GRANITE_DATABASE_URL or --database-url)")]
    NoDatabase(PathBuf),
    #[error("cannot open the database {path}: {source}")]
    Open {
        path: PathBuf,
        source: diesel::ConnectionError,
    },
    #[error("the copy to {path} failed: {source}")]
    Copy {
        path: PathBuf,
        source: diesel::result::Error,
    },
    #[error("cannot make {path} readable by you only: {source}")]
    Permissions {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "granite backup copies SQLite databases; back up PostgreSQL with pg_dump, e.g.\n  \
         pg_dump --format=custom --file={target} {url}\n\
         (give the password through PGPASSWORD or ~/.pgpass; it is not repeated here)"
    )]
    Postgres { url: String, target: String },
}

/// A finished backup.
#[derive(Debug)]
pub struct Backup {
    /// Where it was written, absolute.
    pub path: PathBuf,
    pub bytes: u64,
}

/// Writes a consistent copy of the database `url` names to `target`, a file that must not exist yet,
/// readable by its owner only (mode 0600). A relative `target` is resolved from the current directory,
/// as the user typed it.
pub fn backup(url: &DatabaseUrl, target: &Path) -> Result<Backup, BackupError> {
    let source = match url {
        DatabaseUrl::Sqlite(path) => path,
        DatabaseUrl::Postgres(_) => {
            return Err(BackupError::Postgres {
                url: shell_quoted(&url.redacted()),
                target: shell_quoted(&target.to_string_lossy()),
            });
        }
    };
    let target = std::path::absolute(target).map_err(|source| BackupError::CreateTarget {
        path: target.to_owned(),
        source,
    })?;
    let target_text = sqlite_path_text(&target)?;
    // Opening a missing database would create an empty one, and back that up.
    if !source.is_file() {
        return Err(BackupError::NoDatabase(source.clone()));
    }
    create_private_empty_file(&target)?;
    let copied = copy_into(source, target_text).and_then(|()| restrict_to_owner(&target));
    if let Err(error) = copied {
        // Only what this call created is removed: creation above refused any existing file.
        let _ = std::fs::remove_file(&target);
        return Err(error);
    }
    let bytes = std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
    Ok(Backup {
        path: target,
        bytes,
    })
}

/// The path as SQLite is given it: text, and no NUL, which would end the file name early and write
/// the copy somewhere else than asked.
fn sqlite_path_text(path: &Path) -> Result<&str, BackupError> {
    let text = path
        .to_str()
        .ok_or_else(|| BackupError::PathNotUtf8(path.to_owned()))?;
    if text.contains('\0') {
        return Err(BackupError::NulInPath);
    }
    Ok(text)
}

/// Creates the backup's file, empty and with mode 0600, refusing one that exists (atomically, so two
/// backups at once cannot both write it). `VACUUM INTO` accepts an empty file and keeps its mode, so the
/// copy is never readable by others, not even for a moment.
fn create_private_empty_file(path: &Path) -> Result<(), BackupError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == ErrorKind::AlreadyExists => {
            Err(BackupError::TargetExists(path.to_owned()))
        }
        Err(source) => Err(BackupError::CreateTarget {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The copy itself. The target is a bound parameter, never part of the SQL text, so no file name can
/// change the statement.
fn copy_into(source: &Path, target: &str) -> Result<(), BackupError> {
    let mut conn =
        SqliteConnection::establish(&source.to_string_lossy()).map_err(|source_error| {
            BackupError::Open {
                path: source.to_owned(),
                source: source_error,
            }
        })?;
    let copy_error = |error| BackupError::Copy {
        path: target.into(),
        source: error,
    };
    // The server may hold the write lock for a moment; WAL readers rarely wait, but may at checkpoints.
    conn.batch_execute("PRAGMA busy_timeout = 5000;")
        .map_err(copy_error)?;
    diesel::sql_query("VACUUM INTO ?")
        .bind::<diesel::sql_types::Text, _>(target)
        .execute(&mut conn)
        .map_err(copy_error)?;
    Ok(())
}

/// Mode 0600 once more after the copy: whatever SQLite did to the file, it ends readable by its owner
/// only, like the live database (see `prepare_sqlite_file`).
fn restrict_to_owner(path: &Path) -> Result<(), BackupError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| BackupError::Permissions {
                path: path.to_owned(),
                source,
            },
        )?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// `text` as one POSIX shell word, for a command shown to be copied.
fn shell_quoted(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:@%+=,".contains(&b));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_is_sent_to_pg_dump_without_its_password() {
        let url = DatabaseUrl::parse("postgres://app:hunter2@db:5432/granite").unwrap();
        let error = backup(&url, Path::new("nightly backup.dump")).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("pg_dump --format=custom"), "{message}");
        assert!(
            message.contains("--file='nightly backup.dump' postgres://app@db:5432/granite\n"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
        let url = DatabaseUrl::parse("postgres://app:pw@db/g?options=-csearch_path%3Dx").unwrap();
        let message = backup(&url, Path::new("g.dump")).unwrap_err().to_string();
        assert!(
            message.contains("--file=g.dump 'postgres://app@db/g?options=-csearch_path%3Dx'"),
            "{message}"
        );
    }

    #[test]
    fn paths_with_a_nul_are_refused() {
        assert!(matches!(
            sqlite_path_text(Path::new("/tmp/a\0b.db")),
            Err(BackupError::NulInPath)
        ));
        assert_eq!(
            sqlite_path_text(Path::new("/tmp/it's.db")).unwrap(),
            "/tmp/it's.db"
        );
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_quoted("granite.dump"), "granite.dump");
        assert_eq!(shell_quoted("my dump"), "'my dump'");
        assert_eq!(shell_quoted("it's"), r"'it'\''s'");
        assert_eq!(shell_quoted(""), "''");
    }

    /// A file name with a quote, a space and a semicolon is a file name, not SQL.
    #[test]
    fn copies_to_a_path_that_looks_like_sql() {
        let dir = std::env::temp_dir().join(format!(
            "granite-backup-{}",
            crate::secret::random_base62(10)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let source = dir.join("live.db");
        let mut conn = SqliteConnection::establish(&source.to_string_lossy()).unwrap();
        conn.batch_execute(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (7);",
        )
        .unwrap();
        let target = dir.join("it's; DROP TABLE t; --.db");
        let done = backup(&DatabaseUrl::Sqlite(source.clone()), &target).unwrap();
        assert_eq!(done.path, target);
        assert!(done.bytes > 0);
        let mut copy = SqliteConnection::establish(&target.to_string_lossy()).unwrap();
        copy.batch_execute("SELECT x FROM t").unwrap();
        conn.batch_execute("SELECT x FROM t").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&target).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = backup(&DatabaseUrl::Sqlite(source), &target).unwrap_err();
        assert!(matches!(again, BackupError::TargetExists(_)), "{again}");
        let missing = backup(&DatabaseUrl::Sqlite(dir.join("none.db")), &dir.join("b.db"));
        assert!(matches!(missing, Err(BackupError::NoDatabase(_))));
        assert!(!dir.join("b.db").exists() && !dir.join("none.db").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
