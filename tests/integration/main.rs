//! The integration suite: every capability against the real server, on SQLite and on PostgreSQL.

mod helpers;
mod webdriver;

mod accessibility;
mod api_keys;
mod audit_log;
mod backup;
mod browser;
mod chaos;
mod cli;
mod contract;
mod csrf;
mod demo;
mod driver;
mod first_start;
mod hostile_input;
mod hot_paths;
mod jobs;
mod lifecycle;
mod machines;
mod pages;
mod process;
mod queue;
mod retention;
mod runs;
mod sessions;
mod sign_in;
