//! Log set-up: structured lines on stderr, filtered by RUST_LOG (default `info`; `granite demo` keeps
//! to warnings and errors of the server, so its URL and password stay on the screen).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The filter when RUST_LOG is unset.
pub const DEFAULT_FILTER: &str = "info,actix_server=warn,actix_web=warn";
/// The demo's: the server's warnings only; its simulated drivers say nothing.
pub const DEMO_FILTER: &str = "warn,granite::driver=off";

pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
