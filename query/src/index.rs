//! The index queries are answered from: a plain handle on the store, its
//! network, where raw transactions are read from, and the flow graph,
//! label index and inferred categories as of the last catch-up, with the
//! typed row lookups every answer shares. The answers themselves live in the modules named after
//! what they answer (`chain`, `addresses`, `clusters`, …), which take an
//! `&Index`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use anyhow::Context;
use bitcoin::consensus::deserialize;
use bitcoin::{Transaction, Txid};
use satflow_indexer::blkfiles::{blk_path, BlkFile};
use satflow_indexer::flow::Flow;
use satflow_indexer::services::Store as Inferences;
use satflow_indexer::store::Direction;
use satflow_indexer::{address, Access, Network, Store};
use satflow_schema::block::BlockRow;
use satflow_schema::cf;
use satflow_schema::meta::{MetaKey, OverwrittenCoin};
use satflow_schema::script::AddrKey;
use satflow_schema::tx::{OutputRow, TxRow};
use satflow_schema::{meta, AddrId, Codec, Height, OutNum, TxNum};

use crate::error::{QueryError, Result};
use crate::inferred::{AsLabels, InferredSlot};
use crate::label_index::{LabelIndex, LabelSlot};

pub struct Index {
    store: Store,
    network: Network,
    /// Where raw transactions are read from when not the directory recorded
    /// by the last index run (blocks moved, or the index copied elsewhere).
    blocks_dir: Option<PathBuf>,
    // Shared with a twin (see `twin`).
    flow: Arc<FlowSlot>,
    labels: Arc<LabelSlot>,
    inferred: Arc<InferredSlot>,
    /// Which inferences act as labels; None: none (the default).
    inferred_labels: Option<AsLabels>,
    /// Read from this handle's store when opened and after each catch-up:
    /// not shared with a twin, whose store may be at another state.
    facts: RwLock<Arc<Facts>>,
}

/// What most answers need and only a catch-up changes, read once for each
/// state of the store rather than by every request (a summary sought the
/// overwritten coins, a history page read the tip, its block and the
/// start for its height range).
struct Facts {
    /// The tip's height and block; None while the index holds no block.
    tip: Option<(Height, BlockRow)>,
    /// Height of the index's first block (`Store::base_height`).
    base: Height,
    /// Every coin BIP30 overwrote (`meta::Overwritten`), in address and
    /// output order: two on mainnet, and never more than the repeated
    /// coinbase txids before BIP34.
    overwritten: Vec<(AddrId, OutNum, OverwrittenCoin)>,
}

impl Facts {
    fn read(store: &Store) -> anyhow::Result<Facts> {
        let tip = match store.tip()? {
            Some(tip) => Some((tip.height, store.need_block(tip.height)?)),
            None => None,
        };
        let mut overwritten = Vec::new();
        let from = MetaKey::Overwritten(AddrId(0), OutNum(0));
        for row in store.scan::<cf::Meta>(&from, Direction::Forward) {
            match row? {
                (MetaKey::Overwritten(addr, output), raw) => {
                    overwritten.push((addr, output, OverwrittenCoin::decode(&raw.0)?));
                }
                _ => break,
            }
        }
        Ok(Facts {
            tip,
            base: store.base_height()?,
            overwritten,
        })
    }
}

impl Index {
    pub fn open(db: &Path, access: Access) -> anyhow::Result<Index> {
        Index::from_store(Store::open(db, access)?, db, None)
    }

    /// With `cache_bytes` of block cache (see `Store::open_with_cache`).
    pub fn open_with_cache(db: &Path, access: Access, cache_bytes: usize) -> anyhow::Result<Index> {
        Index::from_store(Store::open_with_cache(db, access, cache_bytes)?, db, None)
    }

    /// A follower of the writer (`Access::Follow`, as a server opens it),
    /// with `cache_bytes` of block cache, whose inferred categories act as
    /// labels (set `inferred`) where at least as confident as
    /// `inferred_labels` asks: stop sets, exposure and watches by category
    /// then count them.
    pub fn open_following(
        db: &Path,
        cache_bytes: usize,
        inferred_labels: Option<AsLabels>,
    ) -> anyhow::Result<Index> {
        let store = Store::open_with_cache(db, Access::Follow, cache_bytes)?;
        Index::from_store(store, db, inferred_labels)
    }

    fn from_store(
        store: Store,
        db: &Path,
        inferred_labels: Option<AsLabels>,
    ) -> anyhow::Result<Index> {
        let network = store
            .network()?
            .with_context(|| format!("{}: the index holds no blocks yet", db.display()))?;
        let flow = Arc::new(FlowSlot::default());
        flow.load(db);
        let inferred = Arc::new(InferredSlot::default());
        inferred.reload(db);
        let labels = Arc::new(LabelSlot::default());
        let admitted = inferred.get().zip(inferred_labels);
        labels.reload(&store, admitted.as_ref().map(|(s, a)| (&**s, *a)))?;
        let facts = RwLock::new(Arc::new(Facts::read(&store)?));
        Ok(Index {
            store,
            network,
            blocks_dir: None,
            flow,
            labels,
            inferred,
            inferred_labels,
            facts,
        })
    }

    /// The inferences the label index takes in, if any.
    fn admitted(&self) -> Option<(Arc<Inferences>, AsLabels)> {
        Some((self.inferred.get()?, self.inferred_labels?))
    }

    /// A second handle on an index opened with `Access::Follow`, following
    /// the same writer with a store of its own (the block cache shared) and
    /// the same flow graph, labels and inferences: a server reads one while
    /// the other catches up.
    pub fn twin(&self) -> anyhow::Result<Index> {
        let store = self.store.twin()?;
        let facts = RwLock::new(Arc::new(Facts::read(&store)?));
        Ok(Index {
            store,
            network: self.network,
            blocks_dir: self.blocks_dir.clone(),
            flow: Arc::clone(&self.flow),
            labels: Arc::clone(&self.labels),
            inferred: Arc::clone(&self.inferred),
            inferred_labels: self.inferred_labels,
            facts,
        })
    }

    pub fn with_blocks_dir(mut self, dir: Option<PathBuf>) -> Index {
        self.blocks_dir = dir;
        self
    }

    pub fn network(&self) -> Network {
        self.network
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The blocks directory given at start, if any (see `with_blocks_dir`).
    pub(crate) fn blocks_dir(&self) -> Option<&Path> {
        self.blocks_dir.as_deref()
    }

    /// For an index opened with `Access::Follow`: moves the store to what
    /// the writer has flushed since. Quick (no scan of the index); the flow
    /// graph and label index follow with `refresh`.
    pub fn catch_up(&self) -> anyhow::Result<()> {
        self.store.catch_up()?;
        let facts = Arc::new(Facts::read(&self.store)?);
        *self.facts.write().unwrap_or_else(PoisonError::into_inner) = facts;
        Ok(())
    }

    fn facts(&self) -> Arc<Facts> {
        Arc::clone(&self.facts.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Brings the flow graph and the label index up to the store, each
    /// swapped in whole: readers go on with the previous ones meanwhile. A
    /// flow graph that lags the store is refused by `flow` only where it
    /// lacks what a request needs.
    /// The label index costs seconds with millions of labels after an
    /// import, which is why this is kept out of `catch_up`.
    pub fn refresh(&self) -> Result<()> {
        self.flow.load(self.store.path());
        self.inferred.reload(self.store.path());
        let admitted = self.admitted();
        self.labels
            .reload(&self.store, admitted.as_ref().map(|(s, a)| (&**s, *a)))
    }

    /// What `satflow categorise` inferred, as of the last refresh.
    pub fn inferences(&self) -> Option<Arc<Inferences>> {
        self.inferred.get()
    }

    /// The flow graph taint traces walk, checked to be on the index's
    /// chain (it may lag), and to have its spenders: a first run marks them
    /// only at its end.
    pub fn flow(&self) -> Result<Arc<Flow>> {
        self.built()?;
        self.flow_appended()
    }

    /// The flow graph as appended so far, checked to be on the index's
    /// chain, whose spenders a first run may not have marked yet: enough
    /// for the watch, which judges a block by its own inputs and outputs.
    pub(crate) fn flow_appended(&self) -> Result<Arc<Flow>> {
        let flow = self.flow.get()?;
        let tip = flow.tip();
        if let Some(h) = tip.height() {
            let ours = self.store.block(Height(h))?.map(|b| b.hash);
            if ours != Some(tip.block_hash()) {
                return Err(QueryError::FailedPrecondition(format!(
                    "the flow graph is on another branch than the index at height {h} (a reorg is being applied); retry after the next index run"
                )));
            }
        }
        Ok(flow)
    }

    /// The labels as of the last catch-up.
    pub fn label_index(&self) -> Arc<LabelIndex> {
        self.labels.get()
    }

    /// The tip's height and block.
    pub(crate) fn tip(&self) -> Result<(Height, BlockRow)> {
        self.facts()
            .tip
            .clone()
            .ok_or_else(|| QueryError::NotFound("the index holds no blocks".into()))
    }

    /// Height of the index's first block: 0 unless it starts later.
    pub(crate) fn base_height(&self) -> Height {
        self.facts().base
    }

    /// The coins BIP30 overwrote (see `addresses::overwritten`) of the
    /// addresses from `first` on, in address and output order, while
    /// `more` holds for their address.
    pub(crate) fn overwritten_while(
        &self,
        first: AddrId,
        mut more: impl FnMut(AddrId) -> bool,
    ) -> Vec<(AddrId, OutNum, OverwrittenCoin)> {
        let facts = self.facts();
        let at = facts.overwritten.partition_point(|(a, _, _)| *a < first);
        facts.overwritten[at..]
            .iter()
            .take_while(|(a, _, _)| more(*a))
            .copied()
            .collect()
    }

    pub(crate) fn block_row(&self, height: Height) -> Result<BlockRow> {
        self.store
            .block(height)?
            .ok_or_else(|| QueryError::NotFound(format!("no block at height {height}")))
    }

    pub(crate) fn tx_number(&self, txid: &Txid) -> Result<TxNum> {
        Ok(self.tx_by_id(txid)?.0)
    }

    /// The tx a txid names and its row, which the lookup reads to tell
    /// txids sharing a prefix apart (`Store::find_tx_row`): callers that
    /// want the row take it from here rather than read it again.
    pub(crate) fn tx_by_id(&self, txid: &Txid) -> Result<(TxNum, TxRow)> {
        match self.store.find_tx_row(txid)? {
            Some(found) => Ok(found),
            None => {
                self.built()?;
                Err(QueryError::NotFound(format!(
                    "transaction {txid} is not in the index"
                )))
            }
        }
    }

    /// Fails, saying why, while a first `satflow index` run builds the
    /// index in bulk (the `bulk` meta row): until its end the rows found by
    /// txid or address, spends and address totals are missing (`txids`,
    /// `addr_ids`, `spends` and `history` wait in run files), and so are
    /// the flow graph's spenders. Asked only on a miss, and before a walk
    /// of the flow graph: a row that is there is right, and a hit costs no
    /// more.
    pub(crate) fn built(&self) -> Result<()> {
        if self.store.meta(meta::Bulk)?.is_some() {
            return Err(QueryError::FailedPrecondition(
                "the index is being built by a first `satflow index` run: lookups by txid and address, spends, balances and traces are there once it has finished; ask again then".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn tx_row(&self, txnum: TxNum) -> Result<TxRow> {
        Ok(self.store.need::<cf::Txs>(&txnum)?)
    }

    /// The transaction of `row` as serialized (witness included) and
    /// decoded, read back from its blk file at the block's location plus
    /// its offset in the block, and checked against its txid. The index
    /// keeps no scripts: whatever needs one reads it here, once per
    /// transaction. FAILED_PRECONDITION when the blk files are gone, were
    /// moved (see `with_blocks_dir`) or rewritten.
    pub(crate) fn read_tx(&self, row: &TxRow) -> Result<(Vec<u8>, Transaction)> {
        let block = self.block_row(row.height)?;
        let (recorded_dir, key) = self.store.blocks_source()?.ok_or_else(|| {
            QueryError::FailedPrecondition("the index does not record its blocks directory".into())
        })?;
        let dir = self.blocks_dir().map_or(recorded_dir, ToOwned::to_owned);
        let path = blk_path(&dir, block.loc.file);
        let file = BlkFile::open(block.loc.file, path.clone()).map_err(|e| {
            QueryError::FailedPrecondition(format!(
                "raw transactions are read from the blk files, and {e:#} (serve with --blocks-dir to point elsewhere)"
            ))
        })?;
        let offset = block.loc.offset + u64::from(row.offset_in_block);
        let raw = file
            .read(key, offset, row.size as usize)
            .map_err(|e| QueryError::FailedPrecondition(format!("{e:#}")))?;
        match deserialize::<Transaction>(&raw) {
            Ok(tx) if tx.compute_txid() == row.txid => Ok((raw, tx)),
            _ => Err(QueryError::FailedPrecondition(format!(
                "{} no longer holds transaction {} where it was indexed (offset {offset}): the blk files changed since indexing",
                path.display(),
                row.txid
            ))),
        }
    }

    /// `read_tx`, or None when the blk files cannot give the transaction
    /// (gone, moved, rewritten): for answers whose script fields are
    /// extras, left empty then, rather than failing the whole answer.
    pub(crate) fn try_read_tx(&self, row: &TxRow) -> Result<Option<Transaction>> {
        match self.read_tx(row) {
            Ok((_, tx)) => Ok(Some(tx)),
            Err(QueryError::FailedPrecondition(why)) => {
                tracing::debug!("scripts of {} left out: {why}", row.txid);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) fn output(&self, n: OutNum) -> Result<OutputRow> {
        Ok(self.store.need::<cf::Outputs>(&n)?)
    }

    /// The tx that created output `n` (`out`): none for a coin from
    /// before the index's first block, which callers that get here do not
    /// expect.
    pub(crate) fn creator(&self, n: OutNum, out: &OutputRow) -> Result<TxRow> {
        match out.tx {
            Some(tx) => self.tx_row(tx),
            None => Err(QueryError::Internal(anyhow::anyhow!(
                "output {n} was created before the index's first block, where a coin of the index was expected"
            ))),
        }
    }

    pub(crate) fn address_id(&self, key: &AddrKey) -> Result<Option<AddrId>> {
        let id = self.store.get::<cf::AddrIds>(key)?;
        if id.is_none() {
            self.built()?;
        }
        Ok(id)
    }

    pub(crate) fn known_address_id(&self, key: &AddrKey) -> Result<AddrId> {
        self.address_id(key)?.ok_or_else(|| {
            QueryError::NotFound(format!(
                "address {} has no history in the index",
                address::encode(key, self.network)
            ))
        })
    }

    pub(crate) fn address_key(&self, id: AddrId) -> Result<AddrKey> {
        Ok(self.store.need::<cf::Addrs>(&id)?)
    }

    /// The address an output is filed under; empty for OP_RETURN.
    pub(crate) fn address_string(&self, id: Option<AddrId>) -> Result<String> {
        match id {
            Some(id) => Ok(address::encode(&self.address_key(id)?, self.network)),
            None => Ok(String::new()),
        }
    }
}

/// The flow graph as last seen: traces hold a snapshot while catch-up
/// moves on (the files only grow, so an old mapping stays readable). When
/// it cannot be read, why not, for the callers of traces; the rest of the
/// server goes on without it.
struct FlowSlot(Mutex<std::result::Result<Arc<Flow>, String>>);

impl Default for FlowSlot {
    fn default() -> FlowSlot {
        FlowSlot(Mutex::new(Err(String::new())))
    }
}

impl FlowSlot {
    fn load(&self, db: &Path) {
        let flow = match Flow::open(db) {
            Ok(Some(f)) => Ok(Arc::new(f)),
            Ok(None) => Err(
                "the flow graph was not built for this index: run `satflow index` without --no-flow"
                    .into(),
            ),
            // The cause names files: for the log, not for callers.
            Err(e) => {
                tracing::error!("the flow graph cannot be read: {e:#}");
                Err("the flow graph cannot be read; the server's log has the detail".into())
            }
        };
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = flow;
    }

    fn get(&self) -> Result<Arc<Flow>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .map_err(QueryError::FailedPrecondition)
    }
}
