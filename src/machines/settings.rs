//! What an admin sets on a machine: its name and its dispatch priority. Each change is one row update
//! and its audit event, in one write transaction; dispatch reads `machines.priority` from the row, so
//! a new priority counts from the next claim on.

use diesel::prelude::*;

use super::{Machine, bounded, find};
use crate::audit::{self, Actor};
use crate::db::schema::machines;
use crate::db::{DbConnection, write_transaction};

/// A name an admin gave a machine: 1 to 100 characters, no control characters, trimmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewName(String);

impl NewName {
    pub fn parse(text: &str) -> Result<Self, String> {
        bounded("name", text, 1, 100)
            .map(Self)
            .map_err(|e| format!("The {e}."))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A machine's dispatch priority: among idle machines that can take a run, the highest gets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Priority(i32);

impl Priority {
    pub const MIN: i32 = -1000;
    pub const MAX: i32 = 1000;

    /// A whole number from −1000 to 1000, as typed in a form (spaces around it are fine).
    pub fn parse(text: &str) -> Result<Self, String> {
        let wrong = || {
            format!(
                "Priority must be a whole number from {} to {}.",
                Self::MIN,
                Self::MAX
            )
        };
        let text = text.trim();
        if text.is_empty() || text.len() > 12 {
            return Err(wrong());
        }
        let value: i64 = text.parse().map_err(|_| wrong())?;
        if !(i64::from(Self::MIN)..=i64::from(Self::MAX)).contains(&value) {
            return Err(wrong());
        }
        Ok(Self(value as i32))
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

/// Renames a live machine of the organization, audited (`machine_renamed`). `None` when there is no
/// such machine; an unchanged name changes and records nothing.
pub fn rename(
    conn: &mut DbConnection,
    organization_id: i64,
    machine_id: i64,
    name: &NewName,
    actor: &Actor,
) -> QueryResult<Option<Machine>> {
    write_transaction(conn, |conn| {
        let Some(machine) = find(conn, organization_id, machine_id)? else {
            return Ok(None);
        };
        if machine.name == name.as_str() {
            return Ok(Some(machine));
        }
        let updated = diesel::update(machines::table.find(machine.id))
            .set(machines::name.eq(name.as_str()))
            .returning(machines::all_columns)
            .get_result::<Machine>(conn)?;
        audit::record(
            conn,
            actor.event(
                organization_id,
                audit::Action::MachineRenamed,
                "machine",
                machine.id,
                serde_json::json!({ "from": machine.name, "to": updated.name }),
            ),
        )?;
        Ok(Some(updated))
    })
}

/// Sets a live machine's dispatch priority, audited (`machine_priority_changed`). `None` when there is
/// no such machine; an unchanged priority changes and records nothing.
pub fn set_priority(
    conn: &mut DbConnection,
    organization_id: i64,
    machine_id: i64,
    priority: Priority,
    actor: &Actor,
) -> QueryResult<Option<Machine>> {
    write_transaction(conn, |conn| {
        let Some(machine) = find(conn, organization_id, machine_id)? else {
            return Ok(None);
        };
        if machine.priority == priority.get() {
            return Ok(Some(machine));
        }
        let updated = diesel::update(machines::table.find(machine.id))
            .set(machines::priority.eq(priority.get()))
            .returning(machines::all_columns)
            .get_result::<Machine>(conn)?;
        audit::record(
            conn,
            actor.event(
                organization_id,
                audit::Action::MachinePriorityChanged,
                "machine",
                machine.id,
                serde_json::json!({
                    "name": machine.name, "from": machine.priority, "to": updated.priority,
                }),
            ),
        )?;
        Ok(Some(updated))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_are_whole_numbers_in_range() {
        assert_eq!(Priority::parse(" 5 ").unwrap().get(), 5);
        assert_eq!(Priority::parse("-1000").unwrap().get(), -1000);
        assert_eq!(Priority::parse("1000").unwrap().get(), 1000);
        for bad in [
            "",
            "1001",
            "-1001",
            "1.5",
            "ten",
            "99999999999999999999999",
            "1\0",
            "\u{0}",
        ] {
            assert!(Priority::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_bounded_and_plain() {
        assert_eq!(NewName::parse("  vm-9 ").unwrap().as_str(), "vm-9");
        assert!(NewName::parse("").is_err());
        assert!(NewName::parse(&"x".repeat(101)).is_err());
        assert!(NewName::parse("vm\0").is_err());
        assert!(NewName::parse("a\nb").is_err());
    }
}
