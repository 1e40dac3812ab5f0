//! The exported tables and their Arrow schemas. `export/SCHEMA.md` documents
//! the same columns for the engines' users; keep the two in step.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Blocks,
    Transactions,
    Inputs,
    Outputs,
    AddressClusters,
    Labels,
}

impl Table {
    pub const ALL: [Table; 6] = [
        Table::Blocks,
        Table::Transactions,
        Table::Inputs,
        Table::Outputs,
        Table::AddressClusters,
        Table::Labels,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Blocks => "blocks",
            Table::Transactions => "transactions",
            Table::Inputs => "inputs",
            Table::Outputs => "outputs",
            Table::AddressClusters => "address_clusters",
            Table::Labels => "labels",
        }
    }

    /// Chain tables are cut into height-range partitions that never change
    /// once complete; the others describe the index as of one moment
    /// (clusters merge, labels come and go) and are rewritten whole.
    pub fn by_height(self) -> bool {
        !matches!(self, Table::AddressClusters | Table::Labels)
    }

    pub fn schema(self) -> SchemaRef {
        let time = || DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("+00:00")));
        let fields = match self {
            Table::Blocks => vec![
                int32("height"),
                hash("hash"),
                hash("prev_hash"),
                hash("merkle_root"),
                Field::new("time", time(), false),
                int32("version"),
                int64("bits"),
                int64("nonce"),
                int32("tx_count"),
                int32("input_count"),
                int32("output_count"),
                int32("size"),
                int32("weight"),
                Field::new("fees", DataType::Int64, true),
            ],
            Table::Transactions => vec![
                int32("height"),
                Field::new("block_time", time(), false),
                int32("position"),
                hash("txid"),
                int32("version"),
                int64("locktime"),
                int32("size"),
                int32("vsize"),
                int32("weight"),
                Field::new("fee", DataType::Int64, true),
                int32("input_count"),
                int32("output_count"),
                int64("output_value"),
                Field::new("is_coinbase", DataType::Boolean, false),
            ],
            Table::Inputs => vec![
                int32("height"),
                hash("txid"),
                int32("input_index"),
                hash("prev_txid"),
                int32("prev_vout"),
                Field::new("prev_height", DataType::Int32, true),
                Field::new("value", DataType::Int64, true),
                string("script_type"),
                Field::new("address", DataType::Utf8, true),
            ],
            Table::Outputs => vec![
                int32("height"),
                hash("txid"),
                int32("vout"),
                int64("value"),
                string("script_type"),
                Field::new("address", DataType::Utf8, true),
            ],
            Table::AddressClusters => vec![
                int64("cluster_id"),
                string("address"),
                int64("cluster_size"),
            ],
            Table::Labels => vec![
                string("address"),
                string("label"),
                string("category"),
                string("label_set"),
                string("source"),
            ],
        };
        Arc::new(Schema::new(fields))
    }

    /// Hash columns: unique values, so a dictionary would only be built to
    /// be abandoned.
    pub fn hash_columns(self) -> &'static [&'static str] {
        match self {
            Table::Blocks => &["hash", "prev_hash", "merkle_root"],
            Table::Transactions => &["txid"],
            Table::Inputs => &["txid", "prev_txid"],
            Table::Outputs => &["txid"],
            Table::AddressClusters | Table::Labels => &[],
        }
    }

    /// Columns looked up by equality (`WHERE txid = ...`, joins on an
    /// address): a bloom filter per row group lets engines skip the rest.
    pub fn bloom_columns(self) -> &'static [&'static str] {
        match self {
            Table::Blocks => &["hash"],
            Table::Transactions => &["txid"],
            Table::Inputs => &["txid", "prev_txid", "address"],
            Table::Outputs => &["txid", "address"],
            Table::AddressClusters => &["address"],
            Table::Labels => &[],
        }
    }
}

fn int32(name: &str) -> Field {
    Field::new(name, DataType::Int32, false)
}

fn int64(name: &str) -> Field {
    Field::new(name, DataType::Int64, false)
}

fn string(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}

/// Hashes as engines show and users paste them: 64 lowercase hex digits in
/// display byte order (as block explorers and Bitcoin Core print them).
fn hash(name: &str) -> Field {
    string(name)
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Table {
    type Err = String;

    fn from_str(s: &str) -> Result<Table, String> {
        Table::ALL
            .into_iter()
            .find(|t| t.name() == s.trim())
            .ok_or_else(|| {
                let names: Vec<_> = Table::ALL.iter().map(|t| t.name()).collect();
                format!("unknown table {s:?}: one of {}", names.join(", "))
            })
    }
}
