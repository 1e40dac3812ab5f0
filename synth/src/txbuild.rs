//! Transaction plans (decided sequentially by the economy) and their materialisation into
//! serialized bytes and hashes (done in parallel, deterministically: all randomness of a
//! transaction's signatures comes from its own `seed`).

use std::fmt::Write;

use bitcoin::consensus::Encodable;
use bitcoin::hashes::{sha256d, Hash, HashEngine};
use bitcoin::{absolute, transaction, Amount, Sequence, Transaction, TxIn, TxOut, Txid, Wtxid};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::actors::ActorId;
use crate::keys::{output_weight, KeyId, Keyring, ScriptKind};
use crate::wallet::Utxo;

/// Where an output goes once its txid is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    Wallet(ActorId),
    /// An exchange's customer-deposit coins, waiting for a sweep.
    Deposits(ActorId),
    /// The Whirlpool queue of the given denomination index.
    Premix(u8),
    /// The coin a peeling chain is peeling.
    Peel(u16),
    /// Coins held by an illicit flow.
    Flow(u16),
    /// OP_RETURN: nobody.
    Nowhere,
}

#[derive(Clone, Copy, Debug)]
pub struct OutPlan {
    pub value: u64,
    pub kind: ScriptKind,
    pub key: KeyId,
    /// First output ever paid to this address: it gets a row in addresses.csv.
    pub fresh: bool,
    pub owner: ActorId,
    pub dest: Dest,
    /// Illicit flow whose funds this output carries.
    pub taint: Option<u16>,
}

/// The CoinJoin protocol a transaction imitates, for coinjoins.csv and the statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CoinJoinKind {
    Whirlpool,
    Wasabi,
    JoinMarket,
}

impl CoinJoinKind {
    pub fn name(self) -> &'static str {
        match self {
            CoinJoinKind::Whirlpool => "whirlpool",
            CoinJoinKind::Wasabi => "wasabi",
            CoinJoinKind::JoinMarket => "joinmarket",
        }
    }
}

/// A suspicious pattern planted with its ground truth (`truth/patterns.csv`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PatternKind {
    PeelChain,
    Layering,
    FanOutIn,
    FanIn,
    Dusting,
    CoinJoinReunion,
    CoinJoinToExchange,
}

impl PatternKind {
    pub const ALL: [PatternKind; 7] = [
        PatternKind::PeelChain,
        PatternKind::Layering,
        PatternKind::FanOutIn,
        PatternKind::FanIn,
        PatternKind::Dusting,
        PatternKind::CoinJoinReunion,
        PatternKind::CoinJoinToExchange,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PatternKind::PeelChain => "peel-chain",
            PatternKind::Layering => "layering",
            PatternKind::FanOutIn => "fan-out-in",
            PatternKind::FanIn => "fan-in",
            PatternKind::Dusting => "dusting",
            PatternKind::CoinJoinReunion => "coinjoin-reunion",
            PatternKind::CoinJoinToExchange => "coinjoin-to-exchange",
        }
    }
}

/// A transaction's place in a planted pattern instance.
#[derive(Clone, Copy, Debug)]
pub struct PatternTag {
    pub kind: PatternKind,
    /// Unique across all kinds (`Market::new_instance`).
    pub instance: u32,
    /// The instance's last transaction: once it is in the chain, the instance is complete.
    pub last: bool,
}

/// What the truth files need to know about a transaction.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tag {
    pub coinjoin: Option<CoinJoinKind>,
    pub flow: Option<u16>,
    pub pattern: Option<PatternTag>,
}

impl Tag {
    /// A transaction of pattern instance `instance`.
    pub fn pattern(kind: PatternKind, instance: u32, last: bool) -> Self {
        Tag {
            pattern: Some(PatternTag {
                kind,
                instance,
                last,
            }),
            ..Tag::default()
        }
    }
}

pub struct TxPlan {
    pub inputs: Vec<Utxo>,
    pub outputs: Vec<OutPlan>,
    pub version: i32,
    pub lock_time: u32,
    pub sequence: u32,
    /// Seeds the signature bytes, so materialisation order cannot change the output.
    pub seed: u64,
    pub tag: Tag,
}

fn varint_len(n: usize) -> u64 {
    if n < 253 {
        1
    } else {
        3
    }
}

impl TxPlan {
    /// Weight with the longest signatures: what a wallet estimates before signing.
    pub fn weight_bound(&self) -> u64 {
        let overhead = 4 * (8 + varint_len(self.inputs.len()) + varint_len(self.outputs.len())) + 2;
        let ins: u64 = self.inputs.iter().map(|u| u.kind.input_weight()).sum();
        let outs: u64 = self
            .outputs
            .iter()
            .map(|o| output_weight(o.kind, o.key))
            .sum();
        overhead + ins + outs
    }

    pub fn input_value(&self) -> u64 {
        self.inputs.iter().map(|u| u.value).sum()
    }

    pub fn output_value(&self) -> u64 {
        self.outputs.iter().map(|o| o.value).sum()
    }

    pub fn fee(&self) -> u64 {
        self.input_value() - self.output_value()
    }

    /// Highest block any input comes from (stale blocks may only include txs older than the fork).
    pub fn newest_input_height(&self) -> u32 {
        self.inputs.iter().map(|u| u.height).max().unwrap_or(0)
    }
}

/// A transaction ready to go into a block.
pub struct BuiltTx {
    pub bytes: Vec<u8>,
    pub txid: Txid,
    pub wtxid: Wtxid,
    pub weight: u64,
    /// `address,actor_id` lines for the fresh outputs.
    pub rows: String,
}

fn txout(out: &OutPlan, ring: &Keyring) -> TxOut {
    TxOut {
        value: Amount::from_sat(out.value),
        script_pubkey: ring.script_pubkey(out.kind, out.key),
    }
}

pub fn build(plan: &TxPlan, ring: &Keyring) -> BuiltTx {
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed);
    let input = plan
        .inputs
        .iter()
        .map(|utxo| {
            let (script_sig, witness) = ring.spend(utxo.kind, utxo.key, &mut rng);
            TxIn {
                previous_output: utxo.outpoint,
                script_sig,
                sequence: Sequence(plan.sequence),
                witness,
            }
        })
        .collect();
    let (output, rows) = outputs(&plan.outputs, ring);
    let tx = Transaction {
        version: transaction::Version(plan.version),
        lock_time: absolute::LockTime::from_consensus(plan.lock_time),
        input,
        output,
    };
    encode(&tx, rows)
}

/// The outputs, and `address,actor_id` rows for those paying a fresh address.
pub fn outputs(plans: &[OutPlan], ring: &Keyring) -> (Vec<TxOut>, String) {
    let mut rows = String::new();
    let outputs = plans
        .iter()
        .map(|out| {
            let out_script = txout(out, ring);
            if out.fresh && ring.write_label(out.kind, &out_script.script_pubkey, &mut rows) {
                writeln!(rows, ",{}", out.owner).expect("writing to a String cannot fail");
            }
            out_script
        })
        .collect();
    (outputs, rows)
}

/// Double SHA-256 of the concatenation of `parts`, without copying them into one buffer.
fn sha256d_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut engine = sha256d::Hash::engine();
    for part in parts {
        engine.input(part);
    }
    sha256d::Hash::from_engine(engine).to_byte_array()
}

/// Serializes once and hashes the txid over the non-witness slices of that same buffer.
pub fn encode(tx: &Transaction, rows: String) -> BuiltTx {
    const IO: &str = "writing to a Vec cannot fail";
    let segwit = tx.input.iter().any(|i| !i.witness.is_empty());
    let mut bytes = Vec::with_capacity(tx.total_size());
    tx.version.consensus_encode(&mut bytes).expect(IO);
    if segwit {
        bytes.extend_from_slice(&[0x00, 0x01]);
    }
    tx.input.consensus_encode(&mut bytes).expect(IO);
    tx.output.consensus_encode(&mut bytes).expect(IO);
    let io_end = bytes.len();
    if segwit {
        for input in &tx.input {
            input.witness.consensus_encode(&mut bytes).expect(IO);
        }
    }
    let witness_end = bytes.len();
    tx.lock_time.consensus_encode(&mut bytes).expect(IO);

    let (txid, wtxid, base_len) = if segwit {
        let txid = sha256d_parts(&[&bytes[..4], &bytes[6..io_end], &bytes[witness_end..]]);
        (
            txid,
            sha256d_parts(&[&bytes]),
            bytes.len() - (witness_end - io_end) - 2,
        )
    } else {
        let hash = sha256d_parts(&[&bytes]);
        (hash, hash, bytes.len())
    };
    BuiltTx {
        weight: 3 * base_len as u64 + bytes.len() as u64,
        txid: Txid::from_byte_array(txid),
        wtxid: Wtxid::from_byte_array(wtxid),
        bytes,
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::{Network, OutPoint};

    fn plan(kinds: &[ScriptKind]) -> TxPlan {
        let inputs = kinds
            .iter()
            .enumerate()
            .map(|(i, &kind)| Utxo {
                outpoint: OutPoint {
                    txid: Txid::all_zeros(),
                    vout: i as u32,
                },
                value: 100_000,
                key: i as u64,
                kind,
                height: 1,
                coinbase: false,
            })
            .collect();
        let outputs = ScriptKind::ALL
            .iter()
            .enumerate()
            .map(|(i, &kind)| OutPlan {
                value: 1_000,
                kind,
                key: 50 + i as u64,
                fresh: true,
                owner: 3,
                dest: Dest::Nowhere,
                taint: None,
            })
            .collect();
        TxPlan {
            inputs,
            outputs,
            version: 2,
            lock_time: 0,
            sequence: 0xffff_fffd,
            seed: 11,
            tag: Tag::default(),
        }
    }

    #[test]
    fn hashes_and_weight_match_rust_bitcoin() {
        let ring = Keyring {
            salt: 1,
            network: Network::Regtest,
        };
        let legacy_only = [
            ScriptKind::P2pkh,
            ScriptKind::P2pk,
            ScriptKind::BareMultisig,
        ];
        let mixed = [
            ScriptKind::P2wpkh,
            ScriptKind::P2pkh,
            ScriptKind::P2tr,
            ScriptKind::P2sh,
            ScriptKind::P2wsh,
        ];
        for kinds in [&legacy_only[..], &mixed[..]] {
            let plan = plan(kinds);
            let built = build(&plan, &ring);
            let tx: Transaction = bitcoin::consensus::deserialize(&built.bytes).unwrap();
            assert_eq!(tx.compute_txid(), built.txid);
            assert_eq!(tx.compute_wtxid(), built.wtxid);
            assert_eq!(tx.weight().to_wu(), built.weight);
            assert!(built.weight <= plan.weight_bound());
            // Eight addressable kinds; OP_RETURN has no address.
            assert_eq!(built.rows.lines().count(), 8);
        }
    }
}
