//! Answers over a satflow index, and the gRPC server that serves them.
//!
//! `index` is the handle every answer takes: the store, its network, the
//! flow graph, the label index and the inferred categories (`inferred`)
//! as of the last catch-up. The answers
//! live in modules named after what they answer: `chain` (status, blocks,
//! transactions), `addresses` (summaries, history, unspent outputs),
//! `clusters` and `link`, `labels`, `trace` (taint traces against the
//! index), `risk` (exposure) and `patterns` (suspicious patterns, which
//! `watch` also raises alerts on). Below them: `history` (pages of an
//! address's or cluster's transactions), `built` (what the clusters
//! cover), `label_index`, `args` and `page` (request fields into typed
//! keys, page tokens), `scripts` (what answers show of an output script
//! read from the blk files). `taint` is the trace engine; `server` serves it all
//! over gRPC; `watch` raises alerts as blocks arrive; `client` connects
//! to a server (the CLI, tests, benches).
//!
//! The modules' uses form no cycle: `index` and what it loads (`built`,
//! `label_index`, `inferred`) name no answer module, and an answer module names only
//! those below it.

pub mod addresses;
mod args;
mod built;
pub mod chain;
pub mod client;
pub mod clusters;
mod error;
mod history;
mod index;
mod inferred;
mod label_index;
mod labels;
mod link;
mod page;
pub mod patterns;
mod risk;
mod screen;
mod scripts;
pub mod server;
pub mod taint;
mod trace;
pub mod watch;

pub use chain::BlockId;
pub use error::{QueryError, Result};
pub use history::{HistoryQuery, Order};
pub use index::Index;
pub use inferred::AsLabels;
pub use label_index::LabelIndex;
