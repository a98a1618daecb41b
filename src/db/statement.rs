//! Hand-written SQL that stays prepared. diesel keeps its own queries prepared per connection, but
//! not `sql_query` text (it cannot know the text is fixed), so a hand-written statement on a hot path
//! would be parsed and planned again on every call. A [`Statement`] is fixed text (`&'static str`)
//! with typed binds, which diesel caches like its own queries: on PostgreSQL it is prepared once per
//! connection and then only executed.
//!
//! Placeholders are written `$1`, `$2`, … on both backends and may repeat; each is replaced by the
//! backend's own placeholder with the numbered bind (SQLite's `?`, PostgreSQL's renumbered `$n`).

use std::marker::PhantomData;

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{HasSqlType, Untyped};
use diesel::{QueryResult, RunQueryDsl};

/// Fixed SQL text and its binds, in order (`$1` is the first).
#[derive(Debug)]
#[must_use = "a statement does nothing until it is executed or loaded"]
pub struct Statement<B = ()> {
    sql: &'static str,
    binds: B,
}

/// SQL text whose placeholders are bound with [`Statement::bind`].
pub fn statement(sql: &'static str) -> Statement {
    Statement { sql, binds: () }
}

impl<B: Binds> Statement<B> {
    /// Binds the next placeholder (`$1` first) to `value`, as SQL type `ST`.
    pub fn bind<ST, V>(self, value: V) -> Statement<Bound<B, ST, V>> {
        Statement {
            sql: self.sql,
            binds: Bound {
                earlier: self.binds,
                value,
                sql_type: PhantomData,
            },
        }
    }
}

/// One bound value after the ones bound before it.
#[derive(Debug)]
pub struct Bound<B, ST, V> {
    earlier: B,
    value: V,
    sql_type: PhantomData<ST>,
}

/// The binds of a statement, pushed by number.
pub trait Binds {
    const COUNT: usize;
}

impl Binds for () {
    const COUNT: usize = 0;
}

impl<B: Binds, ST, V> Binds for Bound<B, ST, V> {
    const COUNT: usize = B::COUNT + 1;
}

/// Pushes bind number `index` (0 is `$1`) for backend `DB`.
pub trait PushBind<DB: Backend>: Binds {
    fn push<'b>(&'b self, index: usize, out: &mut AstPass<'_, 'b, DB>) -> QueryResult<()>;
}

impl<DB: Backend> PushBind<DB> for () {
    fn push<'b>(&'b self, index: usize, _out: &mut AstPass<'_, 'b, DB>) -> QueryResult<()> {
        Err(diesel::result::Error::QueryBuilderError(
            format!("placeholder ${} has no bind", index + 1).into(),
        ))
    }
}

impl<DB, B, ST, V> PushBind<DB> for Bound<B, ST, V>
where
    DB: Backend + HasSqlType<ST>,
    B: PushBind<DB>,
    V: ToSql<ST, DB>,
{
    fn push<'b>(&'b self, index: usize, out: &mut AstPass<'_, 'b, DB>) -> QueryResult<()> {
        if index == B::COUNT {
            out.push_bind_param::<ST, V>(&self.value)
        } else {
            self.earlier.push(index, out)
        }
    }
}

impl<DB, B> QueryFragment<DB> for Statement<B>
where
    DB: Backend,
    B: PushBind<DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let mut rest = self.sql;
        while let Some(at) = rest.find('$') {
            let digits = rest[at + 1..]
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len() - at - 1);
            out.push_sql(&rest[..at]);
            if digits == 0 {
                out.push_sql("$");
            } else {
                let number: usize = rest[at + 1..at + 1 + digits].parse().map_err(|_| {
                    diesel::result::Error::QueryBuilderError("placeholder out of range".into())
                })?;
                if number == 0 {
                    return Err(diesel::result::Error::QueryBuilderError(
                        "placeholders start at $1".into(),
                    ));
                }
                self.binds.push(number - 1, &mut out)?;
            }
            rest = &rest[at + 1 + digits..];
        }
        out.push_sql(rest);
        Ok(())
    }
}

impl<B> QueryId for Statement<B> {
    type QueryId = ();
    // Cached by its text (and bind types), which is fixed.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<B> Query for Statement<B> {
    type SqlType = Untyped;
}

impl<B, Conn> RunQueryDsl<Conn> for Statement<B> {}

#[cfg(test)]
mod tests {
    use diesel::prelude::*;
    use diesel::sql_types::{BigInt, Text};

    use super::statement;

    #[derive(QueryableByName, Debug, PartialEq)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        n: i64,
        #[diesel(sql_type = Text)]
        t: String,
    }

    #[test]
    fn placeholders_repeat_and_bind_in_number_order() {
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        let row: Row = statement("SELECT $2 + $2 AS n, $1 || '$' AS t")
            .bind::<Text, _>("price")
            .bind::<BigInt, _>(21_i64)
            .get_result(&mut conn)
            .unwrap();
        assert_eq!(
            row,
            Row {
                n: 42,
                t: "price$".into()
            }
        );
    }

    #[test]
    fn a_placeholder_without_a_bind_is_an_error_not_a_panic() {
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        let error = statement("SELECT $2 AS n, 'x' AS t")
            .bind::<BigInt, _>(1_i64)
            .get_result::<Row>(&mut conn)
            .unwrap_err();
        assert!(error.to_string().contains("$2 has no bind"), "{error}");
    }
}
