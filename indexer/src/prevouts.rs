//! The coins a block spends, supplied from outside the blocks directory.
//!
//! An index that starts after genesis (a pruned node's directory, a
//! handful of raw blocks) cannot know the value and script of a coin
//! created before its first block. A prevouts file tells it: one JSON list
//! per block, named `<block hash>.json`, with one entry per non-coinbase
//! input in input order, `{"txout": {"value": sat, "script_pubkey": hex}}`
//! (the layout of Floresta's `spent_utxos` test files; other fields are
//! ignored).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bitcoin::BlockHash;
use serde::Deserialize;

/// 21 million bitcoin, in satoshis: no coin is worth more.
/// One spent coin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coin {
    pub value: u64,
    pub script: Vec<u8>,
}

/// The coins one block spends, in the order of its non-coinbase inputs.
#[derive(Debug)]
pub struct Prevouts {
    pub path: PathBuf,
    pub coins: Vec<Coin>,
}

#[derive(Deserialize)]
struct Entry {
    txout: TxOut,
}

#[derive(Deserialize)]
struct TxOut {
    value: u64,
    script_pubkey: String,
}

/// The prevouts of `block` from `dir`, or None when it holds no file for it.
pub fn load(dir: &Path, block: &BlockHash) -> Result<Option<Prevouts>> {
    let path = dir.join(format!("{block}.json"));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let entries: Vec<Entry> = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a prevouts list", path.display()))?;
    let coins = entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let script = hex::decode(&e.txout.script_pubkey).with_context(|| {
                format!("{}: entry {i}: script_pubkey is not hex", path.display())
            })?;
            if e.txout.value > bitcoin::Amount::MAX_MONEY.to_sat() {
                bail!(
                    "{}: entry {i}: value {} sat is more than 21 million bitcoin",
                    path.display(),
                    e.txout.value
                );
            }
            Ok(Coin {
                value: e.txout.value,
                script,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(Prevouts { path, coins }))
}

impl Prevouts {
    /// Checks that the file has one coin per non-coinbase input.
    pub fn check_len(&self, inputs: usize) -> Result<()> {
        if self.coins.len() != inputs {
            bail!(
                "{}: {} prevouts for a block with {inputs} non-coinbase inputs",
                self.path.display(),
                self.coins.len()
            );
        }
        Ok(())
    }
}
