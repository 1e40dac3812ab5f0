//! A satflow index → Apache Parquet, for distributed engines (Spark,
//! DuckDB, Trino, BigQuery).
//!
//! Data flow: `run` plans height partitions and keeps the `manifest`;
//! `read` scans the index rows of a run of blocks and resolves what they
//! refer to; `batches` turns them into Arrow record batches of the chain
//! `tables`; `files` writes them as zstd Parquet. `snapshot` writes the
//! tables that are rewritten whole (clusters, labels). Column meanings:
//! `export/SCHEMA.md`.

mod batches;
mod files;
pub mod manifest;
mod read;
mod run;
mod snapshot;
pub mod tables;

pub use run::{export, ExportOptions, Summary, Written};
pub use tables::Table;
