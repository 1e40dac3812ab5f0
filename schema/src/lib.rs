//! satflow's storage layout, in one place: the column families, the typed
//! ids rows are numbered by, and the codec of every key and value.
//!
//! Every integer in a key is big-endian and fixed-width, so that a key
//! range is an id or height range and iteration order is chain order.
//! `schema/SCHEMA.md` documents the same layouts for people.
//!
//! - `ids`: `Height`, `TxNum`, `OutNum`, `AddrId`, `ClusterId`, `ClusterKey`.
//! - `codec`: the `Codec` trait every key and value implements, `Dec`.
//! - `cf`: one type per column family, naming its key and value types.
//! - `meta`: the typed entries of the `meta` family.
//! - `script`: script types and the address keys histories are filed under.
//! - `block`, `tx`, `address`, `cluster`, `label`: the row types.
//! - `rows`: typed iteration over a family's raw key-value pairs.
//! - `coinjoin`: the CoinJoin denominations that clustering looks for and
//!   the generator plants (chain facts both sides of the index share).
//!
//! Nothing here opens a database: the indexer's `Store` reads and writes
//! through these types, and no other code sees raw keys.

pub mod address;
pub mod block;
pub mod cf;
pub mod cluster;
pub mod codec;
pub mod coinjoin;
pub mod ids;
pub mod label;
pub mod meta;
pub mod rows;
pub mod script;
pub mod tx;

pub use codec::{Codec, Dec, Inline, RowError};
pub use ids::{AddrId, ClusterId, ClusterKey, Height, NextIds, OutNum, TxNum, TxidPrefix};

/// Bumped whenever a layout changes; a binary refuses other versions.
/// Version 2: keyless scripts have their own script type (11).
/// Version 3: clusters merge by size, their rows keyed by `ClusterKey`, with
/// `cluster_undo` records.
/// Version 4: `txids` keyed by the txid's first 8 bytes.
/// Version 5: the numbers in the large families' values (`txs`, `outputs`,
/// `inputs`, `spends`, `history`, `addr_stats`, `cluster_history`) as
/// varints (`Inline::varint`); keys stay big-endian.
pub const SCHEMA_VERSION: u32 = 5;
