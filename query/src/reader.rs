//! Read side of the index: typed lookups over the column families, answered
//! as `satflow.v1` messages.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bitcoin::consensus::deserialize;
use bitcoin::hashes::Hash;
use bitcoin::{BlockHash, Transaction, Txid};
use rocksdb::{Direction, IteratorMode};

use satflow_indexer::blkfiles::{blk_path, BlkFile};
use satflow_indexer::schema::{
    cf, decode_inputs, key_pair, key_u64, split_pair, AddrStats, BlockRow, Dec, HistoryRow,
    InputRef, OutputRow, TxRow, OUTSIDE_TX,
};
use satflow_indexer::script::{AddrKey, ScriptType};
use satflow_indexer::{address, Access, Network, Store};
use satflow_proto::v1 as pb;

use crate::error::{QueryError, Result};
use crate::page::{Listing, Token};

pub struct Index {
    pub(crate) store: Store,
    network: Network,
    /// Where raw transactions are read from when not the directory recorded
    /// by the last index run (blocks moved, or the index copied elsewhere).
    blocks_dir: Option<PathBuf>,
    pub(crate) flow: crate::trace::FlowSlot,
    pub(crate) labels: crate::labels::LabelSlot,
}

pub enum BlockId {
    Height(u32),
    Hash(BlockHash),
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Order {
    OldestFirst,
    NewestFirst,
}

/// One page of an address's history.
#[derive(Clone, Copy)]
pub struct HistoryQuery<'a> {
    pub order: Order,
    /// Inclusive height bounds.
    pub min_height: Option<u32>,
    pub max_height: Option<u32>,
    pub page_size: usize,
    pub page_token: &'a str,
}

impl Index {
    pub fn open(db: &Path, access: Access) -> anyhow::Result<Index> {
        Index::from_store(Store::open(db, access)?, db)
    }

    /// With `cache_bytes` of block cache (see `Store::open_with_cache`).
    pub fn open_with_cache(db: &Path, access: Access, cache_bytes: usize) -> anyhow::Result<Index> {
        Index::from_store(Store::open_with_cache(db, access, cache_bytes)?, db)
    }

    fn from_store(store: Store, db: &Path) -> anyhow::Result<Index> {
        let network = store
            .network()?
            .with_context(|| format!("{}: the index holds no blocks yet", db.display()))?;
        let flow = crate::trace::FlowSlot::default();
        flow.load(db);
        let index = Index {
            store,
            network,
            blocks_dir: None,
            flow,
            labels: Default::default(),
        };
        index.load_labels()?;
        Ok(index)
    }

    pub fn with_blocks_dir(mut self, dir: Option<PathBuf>) -> Index {
        self.blocks_dir = dir;
        self
    }

    pub fn network(&self) -> Network {
        self.network
    }

    /// For an index opened with `Access::Follow`: moves to what the writer
    /// has flushed since.
    pub fn catch_up(&self) -> anyhow::Result<()> {
        self.store.catch_up()?;
        self.flow.load(self.store.path());
        Ok(self.load_labels()?)
    }

    pub fn status(&self) -> Result<pb::ChainStatus> {
        let (height, tip) = self.tip()?;
        let next = tip.next_ids();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Ok(pb::ChainStatus {
            network: self.network.to_string(),
            tip_height: height,
            tip_hash: tip.hash.to_string(),
            tip_time: tip.header.time,
            tx_count: next.tx,
            output_count: next.output,
            address_count: next.addr,
            lag_seconds: now - i64::from(tip.header.time),
            first_height: self.store.base_height()?,
        })
    }

    /// A block's header fields and one page of its txids.
    pub fn block(&self, id: &BlockId, page_size: usize, page_token: &str) -> Result<pb::Block> {
        let height = match id {
            BlockId::Height(h) => *h,
            BlockId::Hash(hash) => {
                let v = self
                    .store
                    .get(cf::BLOCK_HEIGHT, hash.as_byte_array())?
                    .ok_or_else(|| {
                        QueryError::NotFound(format!(
                            "block {hash} is not on the indexed best chain"
                        ))
                    })?;
                Dec::new("block height", &v).u32()?
            }
        };
        let row = self.block_row(height)?;
        let start = Token::resume(
            "tx_page_token",
            page_token,
            Listing::BlockTxids,
            height.into(),
        )?
        .unwrap_or(0);
        let end = u64::from(row.tx_count).min(start.saturating_add(page_size as u64));
        let txids = (start..end)
            .map(|pos| Ok(self.tx_row(row.first_tx + pos)?.txid.to_string()))
            .collect::<Result<Vec<_>>>()?;
        let next_tx_page_token = match end < u64::from(row.tx_count) {
            true => Token {
                listing: Listing::BlockTxids,
                scope: height.into(),
                next: end,
            }
            .encode(),
            false => String::new(),
        };
        let h = &row.header;
        Ok(pb::Block {
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
            txids,
            next_tx_page_token,
            pool: self.block_pool(row.first_tx)?,
        })
    }

    pub fn transaction(&self, txid: &Txid) -> Result<pb::Transaction> {
        let txnum = self.tx_number(txid)?;
        let row = self.tx_row(txnum)?;
        let block = self.block_row(row.height)?;
        let spent_outputs = match row.is_coinbase() {
            true => Vec::new(),
            false => decode_inputs(&self.need(cf::INPUTS, &key_u64(txnum))?)?,
        };
        let inputs = spent_outputs
            .into_iter()
            .map(|n| {
                let out = self.output(n)?;
                let prev_txid = match out.tx {
                    OUTSIDE_TX => Txid::from_byte_array(
                        Dec::new("outside", &self.need(cf::OUTSIDE, &key_u64(n))?).take()?,
                    ),
                    tx => self.tx_row(tx)?.txid,
                };
                Ok(pb::Input {
                    prev_txid: prev_txid.to_string(),
                    prev_vout: out.vout,
                    value: (out.script_type != ScriptType::Unknown).then_some(out.value),
                    address: self.address_string(out.addr)?,
                    script_type: out.script_type.name().into(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let outputs = (row.first_output..row.first_output + u64::from(row.output_count))
            .map(|n| {
                let out = self.output(n)?;
                let spent_by = match self.store.get(cf::SPENDS, &key_u64(n))? {
                    Some(v) => {
                        let r = InputRef::decode(&v)?;
                        let spender = self.tx_row(r.tx)?;
                        Some(pb::Spend {
                            txid: spender.txid.to_string(),
                            vin: r.vin,
                            height: spender.height,
                        })
                    }
                    None => None,
                };
                Ok(pb::Output {
                    vout: out.vout,
                    value: out.value,
                    script_type: out.script_type.name().into(),
                    address: self.address_string(out.addr)?,
                    spent_by,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(pb::Transaction {
            txid: row.txid.to_string(),
            block_hash: block.hash.to_string(),
            height: row.height,
            time: block.header.time,
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

    /// The transaction's bytes, read back from its blk file and checked
    /// against its txid.
    pub fn raw_transaction(&self, txid: &Txid) -> Result<pb::RawTransaction> {
        let row = self.tx_row(self.tx_number(txid)?)?;
        let block = self.block_row(row.height)?;
        let (recorded_dir, key) = self.store.blocks_source()?.ok_or_else(|| {
            QueryError::FailedPrecondition("the index does not record its blocks directory".into())
        })?;
        let dir = self.blocks_dir.clone().unwrap_or(recorded_dir);
        let path = blk_path(&dir, block.loc.file);
        let file = BlkFile::open(block.loc.file, path.clone()).map_err(|e| {
            QueryError::FailedPrecondition(format!(
                "raw transactions are read from the blk files, and {e:#} (serve with --blocks-dir to point elsewhere)"
            ))
        })?;
        let raw = file
            .read(
                key,
                block.loc.offset + u64::from(row.offset_in_block),
                row.size as usize,
            )
            .map_err(|e| QueryError::FailedPrecondition(format!("{e:#}")))?
            .into_owned();
        let found = deserialize::<Transaction>(&raw)
            .ok()
            .map(|tx| tx.compute_txid());
        if found.as_ref() != Some(txid) {
            return Err(QueryError::FailedPrecondition(format!(
                "{} no longer holds transaction {txid} where it was indexed (offset {}): the blk files changed since indexing",
                path.display(),
                block.loc.offset + u64::from(row.offset_in_block)
            )));
        }
        Ok(pb::RawTransaction {
            txid: txid.to_string(),
            height: row.height,
            raw,
        })
    }

    /// None when the chain never paid to or spent from the address.
    pub fn address_summary(&self, key: &AddrKey) -> Result<Option<pb::AddressSummary>> {
        let Some(id) = self.address_id(key)? else {
            return Ok(None);
        };
        let stats = AddrStats::decode(&self.need(cf::ADDR_STATS, &key_u64(id))?)?;
        Ok(Some(pb::AddressSummary {
            address: address::encode(key, self.network),
            script_type: key.kind().name().into(),
            tx_count: stats.tx_count as u64,
            received: stats.received as u64,
            sent: stats.sent as u64,
            balance: stats.balance() as u64,
            utxo_count: stats.utxo_count as u64,
            first_seen_height: self.seen_height(id, Order::OldestFirst)?,
            last_seen_height: self.seen_height(id, Order::NewestFirst)?,
            labels: self.address_labels(key, id)?,
        }))
    }

    /// Height of an address's first (or last) transaction.
    pub(crate) fn seen_height(&self, id: u64, order: Order) -> Result<u32> {
        let row = self.history_rows(cf::HISTORY, id, order, 0..u64::MAX, None, 1)?;
        let (txnum, _) = row.first().ok_or_else(|| {
            QueryError::Internal(anyhow::anyhow!("address {id} has stats but no history"))
        })?;
        Ok(self.tx_row(*txnum)?.height)
    }

    /// One page of the transactions touching `key`: a seek to the token's
    /// key, then a scan of one page (never a skip over earlier pages).
    pub fn history(
        &self,
        key: &AddrKey,
        q: &HistoryQuery,
    ) -> Result<pb::ListAddressHistoryResponse> {
        let id = self.known_address_id(key)?;
        let listing = match q.order {
            Order::OldestFirst => Listing::HistoryOldestFirst,
            Order::NewestFirst => Listing::HistoryNewestFirst,
        };
        self.history_page(cf::HISTORY, id, listing, q)
    }

    /// A page of `family`'s `(id, tx)` rows as history entries.
    pub(crate) fn history_page(
        &self,
        family: &str,
        id: u64,
        listing: Listing,
        q: &HistoryQuery,
    ) -> Result<pb::ListAddressHistoryResponse> {
        let resume = Token::resume("page_token", q.page_token, listing, id)?;
        let txnums = self.tx_range(q.min_height, q.max_height)?;
        let mut rows = self.history_rows(family, id, q.order, txnums, resume, q.page_size + 1)?;
        let next_page_token = match rows.len() > q.page_size {
            true => Token {
                listing,
                scope: id,
                next: rows.pop().expect("more than a page").0,
            }
            .encode(),
            false => String::new(),
        };
        let mut times = BlockTimes::default();
        let entries = rows
            .into_iter()
            .map(|(txnum, h)| {
                let tx = self.tx_row(txnum)?;
                Ok(pb::HistoryEntry {
                    txid: tx.txid.to_string(),
                    height: tx.height,
                    time: times.get(self, tx.height)?,
                    received: h.received,
                    sent: h.sent,
                    net: h.net(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(pb::ListAddressHistoryResponse {
            entries,
            next_page_token,
        })
    }

    /// One page of `key`'s unspent outputs, in chain order.
    pub fn utxos(
        &self,
        key: &AddrKey,
        page_size: usize,
        page_token: &str,
    ) -> Result<pb::ListAddressUtxosResponse> {
        let id = self.known_address_id(key)?;
        let first = Token::resume("page_token", page_token, Listing::Utxos, id)?.unwrap_or(0);
        let start = key_pair(id, first);
        let mut utxos = Vec::new();
        let mut next_page_token = String::new();
        for item in self.store.db().iterator_cf(
            self.store.cf(cf::ADDR_UTXOS),
            IteratorMode::From(&start, Direction::Forward),
        ) {
            let (k, v) = item.context("reading addr_utxos")?;
            let (a, n) = split_pair(&k)?;
            if a != id {
                break;
            }
            if utxos.len() == page_size {
                next_page_token = Token {
                    listing: Listing::Utxos,
                    scope: id,
                    next: n,
                }
                .encode();
                break;
            }
            let out = self.output(n)?;
            let tx = self.tx_row(out.tx)?;
            utxos.push(pb::Utxo {
                txid: tx.txid.to_string(),
                vout: out.vout,
                value: Dec::new("utxo value", &v).u64()?,
                height: tx.height,
            });
        }
        Ok(pb::ListAddressUtxosResponse {
            utxos,
            next_page_token,
        })
    }

    /// Up to `limit` rows of `family` for `id` with tx numbers in
    /// `txnums`, from `resume` (inclusive) in `order`.
    pub(crate) fn history_rows(
        &self,
        family: &str,
        id: u64,
        order: Order,
        txnums: std::ops::Range<u64>,
        resume: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, HistoryRow)>> {
        if txnums.is_empty() {
            return Ok(Vec::new());
        }
        let (from, dir) = match order {
            Order::OldestFirst => (
                resume.map_or(txnums.start, |r| r.max(txnums.start)),
                Direction::Forward,
            ),
            Order::NewestFirst => (
                resume.map_or(txnums.end - 1, |r| r.min(txnums.end - 1)),
                Direction::Reverse,
            ),
        };
        let seek = key_pair(id, from);
        let mut out = Vec::new();
        for item in self
            .store
            .db()
            .iterator_cf(self.store.cf(family), IteratorMode::From(&seek, dir))
        {
            let (k, v) = item.with_context(|| format!("reading {family}"))?;
            let (a, txnum) = split_pair(&k)?;
            if a != id || !txnums.contains(&txnum) || out.len() == limit {
                break;
            }
            out.push((txnum, HistoryRow::decode(&v)?));
        }
        Ok(out)
    }

    /// Tx numbers of the blocks at heights `min..=max` (clipped to the chain).
    fn tx_range(&self, min: Option<u32>, max: Option<u32>) -> Result<std::ops::Range<u64>> {
        let (tip_height, tip) = self.tip()?;
        let first_tx_at = |h: u32| -> Result<u64> {
            match h > tip_height {
                true => Ok(tip.next_ids().tx),
                false => Ok(self.block_row(h)?.first_tx),
            }
        };
        let start = min.map_or(Ok(0), first_tx_at)?;
        let end = match max {
            Some(h) => first_tx_at(h.saturating_add(1))?,
            None => tip.next_ids().tx,
        };
        Ok(start..end.max(start))
    }

    pub(crate) fn tip(&self) -> Result<(u32, BlockRow)> {
        let (height, _) = self
            .store
            .tip()?
            .ok_or_else(|| QueryError::NotFound("the index holds no blocks".into()))?;
        Ok((height, self.block_row(height)?))
    }

    pub(crate) fn tx_number(&self, txid: &Txid) -> Result<u64> {
        self.store
            .find_tx(txid)?
            .ok_or_else(|| QueryError::NotFound(format!("transaction {txid} is not in the index")))
    }

    pub(crate) fn address_id(&self, key: &AddrKey) -> Result<Option<u64>> {
        self.store
            .get(cf::ADDR_IDS, &key.to_bytes())?
            .map(|v| Ok(Dec::new("addr id", &v).u64()?))
            .transpose()
    }

    pub(crate) fn known_address_id(&self, key: &AddrKey) -> Result<u64> {
        self.address_id(key)?.ok_or_else(|| {
            QueryError::NotFound(format!(
                "address {} has no history in the index",
                address::encode(key, self.network)
            ))
        })
    }

    /// The address an output is filed under; empty for OP_RETURN.
    pub(crate) fn address_string(&self, id: Option<u64>) -> Result<String> {
        match id {
            Some(id) => Ok(address::encode(&self.address_key(id)?, self.network)),
            None => Ok(String::new()),
        }
    }

    pub(crate) fn address_key(&self, id: u64) -> Result<AddrKey> {
        let v = self.need(cf::ADDRS, &key_u64(id))?;
        AddrKey::from_bytes(&v)
            .ok_or_else(|| QueryError::Internal(anyhow::anyhow!("corrupt address row {id}")))
    }

    pub(crate) fn block_row(&self, height: u32) -> Result<BlockRow> {
        self.store
            .block(height)?
            .ok_or_else(|| QueryError::NotFound(format!("no block at height {height}")))
    }

    pub(crate) fn tx_row(&self, txnum: u64) -> Result<TxRow> {
        Ok(TxRow::decode(&self.need(cf::TXS, &key_u64(txnum))?)?)
    }

    pub(crate) fn output(&self, n: u64) -> Result<OutputRow> {
        Ok(OutputRow::decode(&self.need(cf::OUTPUTS, &key_u64(n))?)?)
    }

    fn need(&self, cf_name: &'static str, key: &[u8]) -> Result<Vec<u8>> {
        Ok(self.store.need(cf_name, key)?)
    }
}

/// Header times of the blocks a page touches; consecutive entries often
/// share a block.
#[derive(Default)]
struct BlockTimes {
    last: Option<(u32, u32)>,
}

impl BlockTimes {
    fn get(&mut self, index: &Index, height: u32) -> Result<u32> {
        match self.last {
            Some((h, time)) if h == height => Ok(time),
            _ => {
                let time = index.block_row(height)?.header.time;
                self.last = Some((height, time));
                Ok(time)
            }
        }
    }
}
