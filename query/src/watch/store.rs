//! The alert store: watches, every alert raised (numbered from 1 in the
//! order raised), and the blocks evaluated, in a RocksDB of the server's
//! own (the index is read-only to a server). Each block's alerts, and each
//! retraction, are one synced write, so a crash loses or repeats nothing.
//!
//! | family | key | value |
//! |---|---|---|
//! | `watches` | name (UTF-8) | `Watch` (protobuf) |
//! | `alerts` | id (u64 BE) | `Alert` (protobuf) |
//! | `blocks` | height (u32 BE) | block hash (32 bytes) · ids of the alerts raised in it (u64 BE each) |
//! | `default` | `from` | first height to evaluate (u32 BE) |
//! | `default` | `next_id` | id of the next alert (u64 BE) |

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bitcoin::hashes::Hash;
use bitcoin::BlockHash;
use prost::Message;
use rocksdb::{ColumnFamily, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use satflow_proto::v1 as pb;

const WATCHES: &str = "watches";
const ALERTS: &str = "alerts";
const BLOCKS: &str = "blocks";
const FROM: &[u8] = b"from";
const NEXT_ID: &[u8] = b"next_id";

pub struct AlertStore {
    db: DB,
    path: PathBuf,
}

impl AlertStore {
    pub fn open(path: &Path) -> Result<AlertStore> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let db = DB::open_cf(&opts, path, [WATCHES, ALERTS, BLOCKS]).map_err(|e| {
            match e.to_string().contains("lock") {
                true => anyhow::anyhow!(
                    "{}: the alert store is held by another server; give this one its own (--alerts DIR) or none (--no-alerts)",
                    path.display()
                ),
                false => anyhow::Error::new(e).context(format!(
                    "opening the alert store {} (--alerts DIR for another place, --no-alerts for none)",
                    path.display()
                )),
            }
        })?;
        Ok(AlertStore {
            db,
            path: path.to_owned(),
        })
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        self.db.cf_handle(name).expect("created at open")
    }

    fn context(&self) -> String {
        format!("alert store {}", self.path.display())
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        self.db
            .write_opt(batch, &sync)
            .with_context(|| self.context())
    }

    pub fn watches(&self) -> Result<Vec<pb::Watch>> {
        self.db
            .iterator_cf(self.cf(WATCHES), IteratorMode::Start)
            .map(|kv| {
                let (k, v) = kv.with_context(|| self.context())?;
                pb::Watch::decode(&*v).with_context(|| {
                    format!(
                        "{}: watch {:?}",
                        self.context(),
                        String::from_utf8_lossy(&k)
                    )
                })
            })
            .collect()
    }

    fn has_watch(&self, name: &str) -> Result<bool> {
        Ok(self.db.get_cf(self.cf(WATCHES), name)?.is_some())
    }

    pub fn put_watch(&self, w: &pb::Watch) -> Result<()> {
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(WATCHES), &w.name, w.encode_to_vec());
        self.write(b)
    }

    /// False when there was no such watch.
    pub fn delete_watch(&self, name: &str) -> Result<bool> {
        if !self.has_watch(name)? {
            return Ok(false);
        }
        let mut b = WriteBatch::default();
        b.delete_cf(self.cf(WATCHES), name);
        self.write(b)?;
        Ok(true)
    }

    /// The id of the newest alert; 0 when none was raised.
    pub fn newest_id(&self) -> Result<u64> {
        Ok(self.next_id()? - 1)
    }

    fn next_id(&self) -> Result<u64> {
        Ok(match self.db.get(NEXT_ID)? {
            Some(v) => u64::from_be_bytes(v[..].try_into().context("next_id: 8 bytes")?),
            None => 1,
        })
    }

    /// Up to `limit` alerts with ids above `after`, oldest first.
    pub fn alerts_after(&self, after: u64, limit: usize) -> Result<Vec<pb::Alert>> {
        let from = (after + 1).to_be_bytes();
        self.db
            .iterator_cf(
                self.cf(ALERTS),
                IteratorMode::From(&from, rocksdb::Direction::Forward),
            )
            .take(limit)
            .map(|kv| {
                let (_, v) = kv.with_context(|| self.context())?;
                pb::Alert::decode(&*v).with_context(|| format!("{}: an alert", self.context()))
            })
            .collect()
    }

    /// The first height to evaluate, once set.
    pub fn from_height(&self) -> Result<Option<u32>> {
        self.db
            .get(FROM)?
            .map(|v| {
                Ok(u32::from_be_bytes(
                    v[..].try_into().context("from: 4 bytes")?,
                ))
            })
            .transpose()
    }

    pub fn set_from_height(&self, h: u32) -> Result<()> {
        let mut b = WriteBatch::default();
        b.put(FROM, h.to_be_bytes());
        self.write(b)
    }

    /// The last block evaluated, its hash and the ids of the alerts it raised.
    pub fn last_block(&self) -> Result<Option<(u32, BlockHash, Vec<u64>)>> {
        let Some(kv) = self
            .db
            .iterator_cf(self.cf(BLOCKS), IteratorMode::End)
            .next()
        else {
            return Ok(None);
        };
        let (k, v) = kv.with_context(|| self.context())?;
        if k.len() != 4 || v.len() < 32 || (v.len() - 32) % 8 != 0 {
            bail!("{}: a malformed block row", self.context());
        }
        let height = u32::from_be_bytes(k[..].try_into().expect("4"));
        let hash = BlockHash::from_byte_array(v[..32].try_into().expect("32"));
        let ids = v[32..]
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().expect("8")))
            .collect();
        Ok(Some((height, hash, ids)))
    }

    /// Records block `height` as evaluated, with the alerts it raised
    /// (numbered here); returns the newest id.
    pub fn commit_block(
        &self,
        height: u32,
        hash: BlockHash,
        alerts: Vec<pb::Alert>,
    ) -> Result<u64> {
        let mut id = self.next_id()?;
        let mut b = WriteBatch::default();
        let mut row = hash.to_byte_array().to_vec();
        for mut a in alerts {
            a.id = id;
            row.extend_from_slice(&id.to_be_bytes());
            b.put_cf(self.cf(ALERTS), id.to_be_bytes(), a.encode_to_vec());
            id += 1;
        }
        b.put_cf(self.cf(BLOCKS), height.to_be_bytes(), row);
        b.put(NEXT_ID, id.to_be_bytes());
        self.write(b)?;
        Ok(id - 1)
    }

    /// Forgets the last block evaluated (it left the best chain): each of
    /// its alerts gets a retraction, newest first. Returns the newest id.
    pub fn retract_last_block(&self, now_ms: i64) -> Result<u64> {
        let Some((height, _, ids)) = self.last_block()? else {
            return self.newest_id();
        };
        let mut id = self.next_id()?;
        let mut b = WriteBatch::default();
        for raised in ids.into_iter().rev() {
            let v = self
                .db
                .get_cf(self.cf(ALERTS), raised.to_be_bytes())?
                .with_context(|| format!("{}: alert {raised} is missing", self.context()))?;
            let retraction = pb::Alert {
                id,
                kind: pb::AlertKind::AlertRetracted.into(),
                retracts: raised,
                raised_at_ms: now_ms,
                ..pb::Alert::decode(&*v)?
            };
            b.put_cf(
                self.cf(ALERTS),
                id.to_be_bytes(),
                retraction.encode_to_vec(),
            );
            id += 1;
        }
        b.delete_cf(self.cf(BLOCKS), height.to_be_bytes());
        b.put(NEXT_ID, id.to_be_bytes());
        self.write(b)?;
        Ok(id - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(txid: &str) -> pb::Alert {
        pb::Alert {
            txid: txid.into(),
            ..Default::default()
        }
    }

    #[test]
    fn blocks_number_their_alerts_and_retract_them_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let hash = |b: u8| BlockHash::from_byte_array([b; 32]);
        {
            let s = AlertStore::open(dir.path()).unwrap();
            assert_eq!((s.newest_id().unwrap(), s.last_block().unwrap()), (0, None));
            assert_eq!(
                s.commit_block(7, hash(7), vec![alert("a"), alert("b")])
                    .unwrap(),
                2
            );
            assert_eq!(s.commit_block(8, hash(8), vec![]).unwrap(), 2);
            assert_eq!(s.commit_block(9, hash(9), vec![alert("c")]).unwrap(), 3);
            // Block 9, then 8 (no alerts), leave the chain.
            assert_eq!(s.retract_last_block(5).unwrap(), 4);
            assert_eq!(s.retract_last_block(5).unwrap(), 4);
            assert_eq!(s.last_block().unwrap(), Some((7, hash(7), vec![1, 2])));
        }
        // Reopened: the same store, the numbering goes on.
        let s = AlertStore::open(dir.path()).unwrap();
        let all = s.alerts_after(0, 10).unwrap();
        let seen: Vec<_> = all
            .iter()
            .map(|a| (a.id, a.txid.as_str(), a.kind(), a.retracts))
            .collect();
        use pb::AlertKind::{AlertRaised as R, AlertRetracted as X};
        assert_eq!(
            seen,
            [
                (1, "a", R, 0),
                (2, "b", R, 0),
                (3, "c", R, 0),
                (4, "c", X, 3)
            ]
        );
        assert_eq!(s.alerts_after(2, 1).unwrap()[0].id, 3);
        assert_eq!(s.commit_block(8, hash(0x18), vec![alert("d")]).unwrap(), 5);
        // A second opener is told who holds the store.
        let e = AlertStore::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("held by another server"), "{e}");
    }
}
