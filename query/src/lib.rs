//! Answers over a satflow index, and the gRPC server that serves them.
//!
//! `reader` answers lookups as `satflow.v1` messages; `args` and `page`
//! turn request fields into typed keys and resume points; `server` serves
//! it all over gRPC; `watch` raises alerts as blocks arrive; `client`
//! connects to it (the CLI, tests, benches).

mod args;
pub mod client;
mod clusters;
mod error;
mod labels;
mod page;
mod reader;
mod risk;
pub mod server;
pub mod taint;
mod trace;
pub mod watch;

pub use error::{QueryError, Result};
pub use labels::LabelIndex;
pub use reader::{BlockId, HistoryQuery, Index, Order};
