//! satflow's indexer: a Bitcoin Core blocks directory in, RocksDB rows out.
//!
//! Data flow: `blkfiles` finds records → `chain` picks the best chain by
//! work → `parse` decodes blocks (in parallel) → `writer` turns them into
//! the rows of the `satflow_schema` crate, stored by `store`. `run` ties
//! one index run together.
//! `cluster` and `flow` (the value-flow graph taint tracing walks) are
//! derived from those rows and kept current with them; `services`
//! (clusters categorised by behaviour) is derived from both on demand.
//! An index may start after genesis; `prevouts` then describes the older
//! coins its blocks spend. `stop` carries SIGTERM to the batch boundaries.
//! `scratch` holds the arrays that grow with the chain outside the heap.

pub mod address;
pub mod blkfiles;
mod cache;
pub mod chain;
pub mod cluster;
pub mod flow;
pub mod labels;
pub mod network;
pub mod parse;
mod prefetch;
pub mod prevouts;
pub mod progress;
mod ranges;
mod recover;
pub mod run;
mod scratch;
pub mod services;
mod stop;
pub mod store;
mod writer;

pub use network::Network;
pub use run::{run, IndexOptions, Indexer, Stop, Summary};
pub use store::{Access, Store};
