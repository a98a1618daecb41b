//! The integration suite: every capability against the real server, on SQLite and on PostgreSQL.

mod helpers;
mod webdriver;

mod accessibility;
mod api_keys;
mod audit_log;
mod backup;
mod browser;
mod browser_members;
mod chaos;
mod cli;
mod contract;
mod csrf;
mod demo;
mod dispatch;
mod driver;
mod first_start;
mod hostile_input;
mod hot_paths;
mod jobs;
mod lifecycle;
mod machine_pages;
mod machines;
mod members;
mod pages;
mod permissions;
mod process;
mod queue;
mod rate_limits;
mod retention;
mod runs;
mod sessions;
mod sign_in;
