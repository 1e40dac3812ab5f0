//! Read-side view of the index: typed lookups over the column families.

use std::path::Path;

use anyhow::Context;
use bitcoin::hashes::Hash;
use bitcoin::{BlockHash, OutPoint, Txid};
use rocksdb::{Direction, IteratorMode};
use serde::Serialize;

use satflow_indexer::address;
use satflow_indexer::schema::{
    cf, decode_inputs, key_pair, key_u64, split_pair, AddrStats, BlockRow, Dec, HistoryRow,
    InputRef, OutputRow, TxRow,
};
use satflow_indexer::script::AddrKey;
use satflow_indexer::{Access, Network, Store};

use crate::error::{QueryError, Result};

pub struct Index {
    store: Store,
    network: Network,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub network: String,
    pub tip_height: u32,
    pub tip_hash: String,
    pub txs: u64,
    pub outputs: u64,
    pub addresses: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BlockInfo {
    pub height: u32,
    pub hash: String,
    pub prev_hash: String,
    pub merkle_root: String,
    pub version: i32,
    pub time: u32,
    pub bits: u32,
    pub nonce: u32,
    pub tx_count: u32,
    pub size: u32,
    pub weight: u32,
    pub fees: u64,
    pub file: u32,
    pub offset: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct InputInfo {
    pub prevout: String,
    pub value: u64,
    pub address: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutputInfo {
    pub value: u64,
    pub script_type: &'static str,
    pub address: Option<String>,
    /// `txid:vin` of the spending input, once spent.
    pub spent_by: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TxInfo {
    pub txid: String,
    pub height: u32,
    pub position: u32,
    pub version: i32,
    pub locktime: u32,
    pub size: u32,
    pub vsize: u32,
    pub weight: u32,
    pub fee: u64,
    pub coinbase: bool,
    pub inputs: Vec<InputInfo>,
    pub outputs: Vec<OutputInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AddressSummary {
    pub address: String,
    pub tx_count: u64,
    pub received: u64,
    pub sent: u64,
    pub balance: u64,
    pub utxo_count: u64,
    pub first_seen: Option<u32>,
    pub last_seen: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    pub txid: String,
    pub height: u32,
    pub received: u64,
    pub sent: u64,
    pub net: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Utxo {
    pub outpoint: String,
    pub value: u64,
    pub height: u32,
}

impl Index {
    pub fn open(db: &Path) -> anyhow::Result<Index> {
        let store = Store::open(db, Access::ReadOnly)?;
        let network = store
            .network()?
            .with_context(|| format!("{}: the index holds no blocks yet", db.display()))?;
        Ok(Index { store, network })
    }

    pub fn network(&self) -> Network {
        self.network
    }

    pub fn status(&self) -> Result<Status> {
        let tip = self
            .store
            .tip_block()?
            .ok_or_else(|| QueryError::NotFound("the index holds no blocks".into()))?;
        let (height, hash) = self.store.tip()?.expect("tip block implies tip");
        let next = tip.next_ids();
        Ok(Status {
            network: self.network.to_string(),
            tip_height: height,
            tip_hash: hash.to_string(),
            txs: next.tx,
            outputs: next.output,
            addresses: next.addr,
        })
    }

    /// A block by height, or by hash when `id` is 64 hex digits.
    pub fn block(&self, id: &str) -> Result<BlockInfo> {
        let height = if id.len() == 64 {
            let hash: BlockHash = id
                .parse()
                .map_err(|e| QueryError::InvalidArgument(format!("block hash {id:?}: {e}")))?;
            let v = self
                .store
                .get(cf::BLOCK_HEIGHT, hash.as_byte_array())?
                .ok_or_else(|| {
                    QueryError::NotFound(format!("block {hash} is not on the indexed best chain"))
                })?;
            Dec::new("block height", &v).u32()?
        } else {
            id.parse().map_err(|_| {
                QueryError::InvalidArgument(format!("{id:?} is neither a height nor a block hash"))
            })?
        };
        let row = self
            .store
            .block(height)?
            .ok_or_else(|| QueryError::NotFound(format!("no block at height {height}")))?;
        Ok(block_info(height, &row))
    }

    /// Txids of the block at `height`, in block order, paged.
    pub fn block_txids(&self, height: u32, skip: usize, limit: usize) -> Result<Vec<String>> {
        let row = self
            .store
            .block(height)?
            .ok_or_else(|| QueryError::NotFound(format!("no block at height {height}")))?;
        let start = row.first_tx.saturating_add(skip as u64);
        let end = row.first_tx + u64::from(row.tx_count);
        (start..end)
            .take(limit)
            .map(|n| Ok(self.tx_row(n)?.txid.to_string()))
            .collect()
    }

    pub fn tx(&self, txid: &str) -> Result<TxInfo> {
        let txid: Txid = txid
            .parse()
            .map_err(|e| QueryError::InvalidArgument(format!("txid {txid:?}: {e}")))?;
        let txnum = self.store.find_tx(&txid)?.ok_or_else(|| {
            QueryError::NotFound(format!("transaction {txid} is not in the index"))
        })?;
        let row = self.tx_row(txnum)?;
        let spent_outputs = match row.is_coinbase() {
            true => Vec::new(),
            false => decode_inputs(&self.need(cf::INPUTS, &key_u64(txnum))?)?,
        };
        let mut inputs = Vec::new();
        for spent in spent_outputs {
            let out = self.output(spent)?;
            let funding = self.tx_row(out.tx)?;
            inputs.push(InputInfo {
                prevout: OutPoint {
                    txid: funding.txid,
                    vout: out.vout,
                }
                .to_string(),
                value: out.value,
                address: out.addr.map(|a| self.address_string(a)).transpose()?,
            });
        }
        let mut outputs = Vec::new();
        for n in row.first_output..row.first_output + u64::from(row.output_count) {
            let out = self.output(n)?;
            let spent_by = match self.store.get(cf::SPENDS, &key_u64(n))? {
                Some(v) => {
                    let r = InputRef::decode(&v)?;
                    Some(format!("{}:{}", self.tx_row(r.tx)?.txid, r.vin))
                }
                None => None,
            };
            outputs.push(OutputInfo {
                value: out.value,
                script_type: out.script_type.name(),
                address: out.addr.map(|a| self.address_string(a)).transpose()?,
                spent_by,
            });
        }
        Ok(TxInfo {
            txid: row.txid.to_string(),
            height: row.height,
            position: row.position,
            version: row.version,
            locktime: row.locktime,
            size: row.size,
            vsize: row.vsize(),
            weight: row.weight,
            fee: row.fee,
            coinbase: row.is_coinbase(),
            inputs,
            outputs,
        })
    }

    pub fn address(&self, addr: &str) -> Result<AddressSummary> {
        let (id, shown) = self.address_id(addr)?;
        let stats = AddrStats::decode(&self.need(cf::ADDR_STATS, &key_u64(id))?)?;
        let first = self
            .history_page(id, false, 1)?
            .first()
            .map(|(_, h)| h.height);
        let last = self
            .history_page(id, true, 1)?
            .first()
            .map(|(_, h)| h.height);
        Ok(AddressSummary {
            address: shown,
            tx_count: stats.tx_count as u64,
            received: stats.received as u64,
            sent: stats.sent as u64,
            balance: stats.balance() as u64,
            utxo_count: stats.utxo_count as u64,
            first_seen: first,
            last_seen: last,
        })
    }

    /// Transactions touching `addr` in chain order (or newest first).
    pub fn history(
        &self,
        addr: &str,
        newest_first: bool,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>> {
        let (id, _) = self.address_id(addr)?;
        Ok(self
            .history_page(id, newest_first, limit)?
            .into_iter()
            .map(|(_, h)| h)
            .collect())
    }

    pub fn utxos(&self, addr: &str) -> Result<Vec<Utxo>> {
        let (id, _) = self.address_id(addr)?;
        let start = key_pair(id, 0);
        let mut out = Vec::new();
        for item in self.store.db().iterator_cf(
            self.store.cf(cf::ADDR_UTXOS),
            IteratorMode::From(&start, Direction::Forward),
        ) {
            let (k, v) = item.context("reading addr_utxos")?;
            let (a, n) = split_pair(&k)?;
            if a != id {
                break;
            }
            let o = self.output(n)?;
            let tx = self.tx_row(o.tx)?;
            out.push(Utxo {
                outpoint: OutPoint {
                    txid: tx.txid,
                    vout: o.vout,
                }
                .to_string(),
                value: Dec::new("utxo value", &v).u64()?,
                height: tx.height,
            });
        }
        Ok(out)
    }

    fn history_page(
        &self,
        id: u64,
        newest_first: bool,
        limit: usize,
    ) -> Result<Vec<(u64, HistoryEntry)>> {
        let (from, dir) = if newest_first {
            (key_pair(id, u64::MAX), Direction::Reverse)
        } else {
            (key_pair(id, 0), Direction::Forward)
        };
        let mut out = Vec::new();
        for item in self
            .store
            .db()
            .iterator_cf(self.store.cf(cf::HISTORY), IteratorMode::From(&from, dir))
        {
            let (k, v) = item.context("reading history")?;
            let (a, txnum) = split_pair(&k)?;
            if a != id || out.len() >= limit {
                break;
            }
            let h = HistoryRow::decode(&v)?;
            let tx = self.tx_row(txnum)?;
            out.push((
                txnum,
                HistoryEntry {
                    txid: tx.txid.to_string(),
                    height: tx.height,
                    received: h.received,
                    sent: h.sent,
                    net: h.net(),
                },
            ));
        }
        Ok(out)
    }

    fn address_id(&self, addr: &str) -> Result<(u64, String)> {
        let key = address::parse(addr, self.network)
            .map_err(|e| QueryError::InvalidArgument(format!("{e:#}")))?;
        let shown = address::encode(&key, self.network);
        let v = self
            .store
            .get(cf::ADDR_IDS, &key.to_bytes())?
            .ok_or_else(|| {
                QueryError::NotFound(format!("address {shown} has no history in the index"))
            })?;
        Ok((Dec::new("addr id", &v).u64()?, shown))
    }

    fn address_string(&self, id: u64) -> Result<String> {
        let v = self.need(cf::ADDRS, &key_u64(id))?;
        let key = AddrKey::from_bytes(&v)
            .ok_or_else(|| QueryError::Internal(anyhow::anyhow!("corrupt address row {id}")))?;
        Ok(address::encode(&key, self.network))
    }

    fn tx_row(&self, txnum: u64) -> Result<TxRow> {
        Ok(TxRow::decode(&self.need(cf::TXS, &key_u64(txnum))?)?)
    }

    fn output(&self, n: u64) -> Result<OutputRow> {
        Ok(OutputRow::decode(&self.need(cf::OUTPUTS, &key_u64(n))?)?)
    }

    fn need(&self, cf_name: &'static str, key: &[u8]) -> Result<Vec<u8>> {
        self.store.get(cf_name, key)?.ok_or_else(|| {
            QueryError::Internal(anyhow::anyhow!(
                "index is inconsistent: {cf_name} row {} is missing",
                hex::encode(key)
            ))
        })
    }
}

fn block_info(height: u32, row: &BlockRow) -> BlockInfo {
    let h = &row.header;
    BlockInfo {
        height,
        hash: row.hash.to_string(),
        prev_hash: h.prev_blockhash.to_string(),
        merkle_root: h.merkle_root.to_string(),
        version: h.version.to_consensus(),
        time: h.time,
        bits: h.bits.to_consensus(),
        nonce: h.nonce,
        tx_count: row.tx_count,
        size: row.loc.len,
        weight: row.weight,
        fees: row.fees,
        file: row.loc.file,
        offset: row.loc.offset,
    }
}
