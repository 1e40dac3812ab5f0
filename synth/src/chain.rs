//! Network parameters and block assembly: coinbase (BIP34 height, witness commitment,
//! subsidy + fees), merkle root, header and the serialized block.

use bitcoin::block::{Header, Version};
use bitcoin::blockdata::constants::genesis_block;
use bitcoin::consensus::Encodable;
use bitcoin::hashes::Hash;
use bitcoin::script::{Builder, PushBytesBuf};
use bitcoin::{
    merkle_tree, Amount, Block, BlockHash, CompactTarget, Network, OutPoint, ScriptBuf, Sequence,
    Transaction, TxIn, TxMerkleNode, TxOut, VarInt, WitnessMerkleNode, Wtxid,
};
use rand::Rng;

use crate::cli::NetworkChoice;
use crate::keys::Keyring;
use crate::txbuild::{self, BuiltTx, TxPlan};

pub struct ChainParams {
    pub network: Network,
    pub magic: [u8; 4],
    pub bits: CompactTarget,
    pub halving_interval: u32,
    /// Regtest's target is so easy that real proof of work costs two hashes per block.
    pub real_pow: bool,
}

impl ChainParams {
    pub fn new(choice: NetworkChoice) -> Self {
        match choice {
            NetworkChoice::Regtest => ChainParams {
                network: Network::Regtest,
                magic: [0xfa, 0xbf, 0xb5, 0xda],
                bits: CompactTarget::from_consensus(0x207f_ffff),
                halving_interval: 150,
                real_pow: true,
            },
            NetworkChoice::Main => ChainParams {
                network: Network::Bitcoin,
                magic: [0xf9, 0xbe, 0xb4, 0xd9],
                // Difficulty of mid-2024 mainnet; the proof of work itself is not real.
                bits: CompactTarget::from_consensus(0x1703_4219),
                halving_interval: 210_000,
                real_pow: false,
            },
        }
    }

    pub fn genesis(&self) -> Block {
        genesis_block(self.network)
    }

    pub fn subsidy(&self, height: u32) -> u64 {
        let halvings = height / self.halving_interval;
        if halvings >= 64 {
            0
        } else {
            50_0000_0000 >> halvings
        }
    }
}

/// A block ready for a blk file.
pub struct Assembled {
    pub hash: BlockHash,
    pub bytes: Vec<u8>,
    pub coinbase: BuiltTx,
    pub weight: u64,
}

/// What goes into a header besides the transactions.
pub struct HeaderFields {
    pub prev: BlockHash,
    pub height: u32,
    pub time: u32,
    pub pool_tag: String,
}

/// Builds the coinbase paying `coinbase.outputs` (which must already sum to subsidy + fees)
/// in front of `txs` and serializes the block.
pub fn assemble(
    params: &ChainParams,
    fields: &HeaderFields,
    coinbase: &TxPlan,
    txs: &[&BuiltTx],
    ring: &Keyring,
    rng: &mut impl Rng,
) -> Assembled {
    let coinbase = build_coinbase(fields, coinbase, txs, ring, rng);
    let txids = std::iter::once(&coinbase)
        .chain(txs.iter().copied())
        .map(|t| t.txid.to_raw_hash());
    let merkle_root =
        TxMerkleNode::from_raw_hash(merkle_tree::calculate_root(txids).expect("a coinbase"));
    let mut header = Header {
        version: block_version(rng),
        prev_blockhash: fields.prev,
        merkle_root,
        time: fields.time,
        bits: params.bits,
        nonce: rng.gen(),
    };
    if params.real_pow {
        while header.validate_pow(header.target()).is_err() {
            header.nonce = header.nonce.wrapping_add(1);
        }
    }
    let tx_count = txs.len() + 1;
    let size = 80 + 9 + coinbase.bytes.len() + txs.iter().map(|t| t.bytes.len()).sum::<usize>();
    let mut bytes = Vec::with_capacity(size);
    header
        .consensus_encode(&mut bytes)
        .expect("writing to a Vec cannot fail");
    VarInt(tx_count as u64)
        .consensus_encode(&mut bytes)
        .expect("writing to a Vec cannot fail");
    bytes.extend_from_slice(&coinbase.bytes);
    for tx in txs {
        bytes.extend_from_slice(&tx.bytes);
    }
    let weight = 4 * (80 + VarInt(tx_count as u64).size() as u64)
        + coinbase.weight
        + txs.iter().map(|t| t.weight).sum::<u64>();
    Assembled {
        hash: header.block_hash(),
        bytes,
        coinbase,
        weight,
    }
}

/// Versionbits top bits, with the low bits ASIC-boost miners roll on most blocks.
fn block_version(rng: &mut impl Rng) -> Version {
    let rolled = if rng.gen_bool(0.6) {
        rng.gen::<i32>() & 0x1fff_e000
    } else {
        0
    };
    Version::from_consensus(0x2000_0000 | rolled)
}

fn build_coinbase(
    fields: &HeaderFields,
    plan: &TxPlan,
    txs: &[&BuiltTx],
    ring: &Keyring,
    rng: &mut impl Rng,
) -> BuiltTx {
    let wtxids = std::iter::once(Wtxid::all_zeros())
        .chain(txs.iter().map(|t| t.wtxid))
        .map(|w| w.to_raw_hash());
    let witness_root =
        WitnessMerkleNode::from_raw_hash(merkle_tree::calculate_root(wtxids).expect("a coinbase"));
    let reserved = [0u8; 32];
    let commitment = Block::compute_witness_commitment(&witness_root, &reserved);
    let mut commitment_script = vec![0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
    commitment_script.extend_from_slice(commitment.as_byte_array());

    let tag = PushBytesBuf::try_from(fields.pool_tag.as_bytes().to_vec()).expect("short pool tag");
    // BIP34: the height first, as Core's `CScript() << nHeight` writes it, then extranonce and tag.
    let script_sig = Builder::new()
        .push_int(i64::from(fields.height))
        .push_slice(rng.gen::<u64>().to_le_bytes())
        .push_slice(tag)
        .into_script();
    let (mut output, rows) = txbuild::outputs(&plan.outputs, ring);
    output.push(TxOut {
        value: Amount::ZERO,
        script_pubkey: ScriptBuf::from_bytes(commitment_script),
    });
    let tx = Transaction {
        version: bitcoin::transaction::Version(plan.version),
        lock_time: bitcoin::absolute::LockTime::from_consensus(plan.lock_time),
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig,
            sequence: Sequence(plan.sequence),
            witness: bitcoin::Witness::from_slice(&[reserved]),
        }],
        output,
    };
    txbuild::encode(&tx, rows)
}
