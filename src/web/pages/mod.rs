//! The dashboard's pages and the sections htmx swaps in place. Each module loads what its template
//! shows and renders it: a whole page for a navigation, just the section or fragment for htmx.

pub mod account;
pub mod api_keys;
pub mod api_management;
pub mod audit_log;
pub mod enrollment_tokens;
pub mod invite;
pub mod jobs;
pub mod login;
pub mod machine_cleanup;
pub mod machine_detail;
pub mod machines;
pub mod members;
pub mod queue_status;
pub mod setup;
pub mod status_strip;
