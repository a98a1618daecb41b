//! What templates share: the page layout, server-rendered charts, times shown relative with the
//! exact time on hover, counts with their thousands grouped, browsers named the way people call
//! them, and what an action says when done.

pub mod charts;
pub mod feedback;
pub mod filters;
pub mod layout;
pub mod time;
pub mod user_agent;
