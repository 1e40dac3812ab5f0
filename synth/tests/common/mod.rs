//! What the generator's tests share: their arguments, reading the
//! truth files as the generator writes them, and the main chain of a
//! generated directory as rust-bitcoin decodes it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bitcoin::consensus::deserialize;
use bitcoin::hashes::Hash;
use bitcoin::{Address, Block, BlockHash, Network, OutPoint, Script, Transaction, TxOut, Txid};
use satflow_synth::{NetworkChoice, SynthArgs};

/// A regtest chain with `--xor --truncate-tail`, as the fixtures are made.
pub fn args(dir: &Path, size: u64, seed: u64, plant_patterns: bool) -> SynthArgs {
    SynthArgs {
        out: dir.to_path_buf(),
        size,
        seed,
        network: NetworkChoice::Regtest,
        xor: true,
        truncate_tail: true,
        whale_share: 0.0,
        plant_patterns,
        plant_services: false,
        quiet: true,
    }
}

/// The address as addresses.csv names it.
pub fn label(script: &Script, network: Network) -> Option<String> {
    if script.is_op_return() {
        None
    } else if script.is_p2pk() {
        // Synthetic keys are not curve points, so hash the raw bytes as an explorer would.
        let hash = bitcoin::PubkeyHash::hash(&script.as_bytes()[1..34]);
        Some(Address::p2pkh(hash, network).to_string())
    } else {
        Some(match Address::from_script(script, network) {
            Ok(address) => address.to_string(),
            Err(_) => format!("script:{script:x}"),
        })
    }
}

/// The header and rows of truth file `name` of the directory `dir`.
pub fn read_csv(dir: &Path, name: &str) -> (String, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(dir.join("truth").join(name)).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap().to_string();
    (
        header,
        lines
            .map(|l| l.split(',').map(String::from).collect())
            .collect(),
    )
}

/// The blk files of a blocks directory, in order.
pub fn blk_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("blk"))
        .collect();
    files.sort();
    files
}

/// Every whole record of every blk file (un-XORed); a cut last record is skipped.
pub fn read_blocks(dir: &Path, magic: [u8; 4]) -> Vec<Block> {
    let key: [u8; 8] = std::fs::read(dir.join("xor.dat")).map_or([0; 8], |k| k.try_into().unwrap());
    let mut blocks = Vec::new();
    for path in blk_files(dir) {
        let mut bytes = std::fs::read(path).unwrap();
        satflow_synth::xor(&mut bytes, key, 0);
        let mut pos = 0;
        while pos + 8 <= bytes.len() && bytes[pos..pos + 4] == magic {
            let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
            if pos + 8 + len > bytes.len() {
                break;
            }
            blocks.push(deserialize(&bytes[pos + 8..pos + 8 + len]).unwrap());
            pos += 8 + len;
        }
    }
    blocks
}

/// The main chain, genesis first: the longest branch (all blocks share nBits).
pub fn main_chain(blocks: Vec<Block>) -> Vec<Block> {
    let mut by_hash: HashMap<BlockHash, Block> =
        blocks.into_iter().map(|b| (b.block_hash(), b)).collect();
    let mut heights: HashMap<BlockHash, u32> = HashMap::new();
    let hashes: Vec<BlockHash> = by_hash.keys().copied().collect();
    for &hash in &hashes {
        let mut path = vec![hash];
        let mut base = 0;
        loop {
            let prev = by_hash[path.last().unwrap()].header.prev_blockhash;
            if let Some(&h) = heights.get(&prev) {
                base = h + 1;
                break;
            }
            if !by_hash.contains_key(&prev) {
                break;
            }
            path.push(prev);
        }
        for (i, h) in path.iter().rev().enumerate() {
            heights.insert(*h, base + i as u32);
        }
    }
    let (&tip, _) = heights.iter().max_by_key(|(_, &h)| h).unwrap();
    let mut chain = vec![by_hash.remove(&tip).unwrap()];
    while let Some(prev) = by_hash.remove(&chain.last().unwrap().header.prev_blockhash) {
        chain.push(prev);
    }
    chain.reverse();
    chain
}

/// The main chain of a generated directory (any network; a truncated tail is skipped),
/// decoded, with the truth about who owns each address.
pub struct Decoded {
    pub network: Network,
    /// truth/summary.json.
    pub summary: serde_json::Value,
    /// Main-chain transactions and their heights.
    pub txs: HashMap<Txid, (u32, Transaction)>,
    /// Txids of each main-chain block, genesis first.
    pub blocks: Vec<Vec<Txid>>,
    /// Height of the first main-chain output paying each address.
    pub first_paid: HashMap<String, u32>,
    /// Address → actor kind and id (truth); every address listed once.
    pub owners: HashMap<String, (String, String)>,
    /// Actor id → kind and name (truth/actors.csv).
    pub actors: HashMap<String, (String, String)>,
}

impl Decoded {
    pub fn load(dir: &Path) -> Self {
        let text = std::fs::read_to_string(dir.join("truth/summary.json")).unwrap();
        let summary: serde_json::Value = serde_json::from_str(&text).unwrap();
        let (network, magic) = match summary["network"].as_str().unwrap() {
            "main" => (Network::Bitcoin, [0xf9, 0xbe, 0xb4, 0xd9]),
            _ => (Network::Regtest, [0xfa, 0xbf, 0xb5, 0xda]),
        };
        let blocks = main_chain(read_blocks(dir, magic));
        assert_eq!(
            blocks.len() as u64,
            summary["blocks"],
            "the whole main chain"
        );
        let mut txs = HashMap::new();
        let mut first_paid = HashMap::new();
        let blocks: Vec<Vec<Txid>> = blocks
            .into_iter()
            .enumerate()
            .map(|(height, block)| {
                let txids = block.txdata.iter().map(|t| t.compute_txid()).collect();
                for tx in block.txdata {
                    for out in &tx.output {
                        if let Some(address) = label(&out.script_pubkey, network) {
                            first_paid.entry(address).or_insert(height as u32);
                        }
                    }
                    txs.insert(tx.compute_txid(), (height as u32, tx));
                }
                txids
            })
            .collect();
        let (header, rows) = read_csv(dir, "actors.csv");
        assert_eq!(header, "actor_id,kind,name");
        let actors: HashMap<String, (String, String)> = rows
            .into_iter()
            .map(|r| (r[0].clone(), (r[1].clone(), r[2].clone())))
            .collect();
        let (header, addresses) = read_csv(dir, "addresses.csv");
        assert_eq!(header, "address,actor_id");
        let mut owners = HashMap::new();
        for r in addresses {
            let owner = (actors[&r[1]].0.clone(), r[1].clone());
            assert!(
                owners.insert(r[0].clone(), owner).is_none(),
                "{} listed twice",
                r[0]
            );
        }
        Decoded {
            network,
            summary,
            txs,
            blocks,
            first_paid,
            owners,
            actors,
        }
    }

    pub fn tx(&self, txid: &Txid) -> &Transaction {
        &self.txs[txid].1
    }

    pub fn height(&self, txid: &Txid) -> u32 {
        self.txs[txid].0
    }

    pub fn prevout(&self, outpoint: &OutPoint) -> &TxOut {
        &self.tx(&outpoint.txid).output[outpoint.vout as usize]
    }

    pub fn label(&self, script: &Script) -> Option<String> {
        label(script, self.network)
    }

    /// (actor kind, actor id) owning the address `script` pays.
    pub fn owner(&self, script: &Script) -> &(String, String) {
        let address = self.label(script).expect("an address");
        self.owners
            .get(&address)
            .unwrap_or_else(|| panic!("{address} has an owner"))
    }

    /// Every spend is of an existing unspent output (coinbase ones mature, all at least two
    /// blocks old), value in >= value out, coinbases claim subsidy + fees, and every address
    /// paid has an owner in addresses.csv.
    pub fn assert_valid(&self) {
        let halving = if self.network == Network::Bitcoin {
            210_000
        } else {
            150
        };
        let mut utxos: HashMap<OutPoint, (u64, bool, u32)> = HashMap::new();
        for (height, txids) in self.blocks.iter().enumerate().skip(1) {
            let height = height as u32;
            let mut fees = 0;
            for txid in &txids[1..] {
                let tx = self.tx(txid);
                let mut value_in = 0;
                for input in &tx.input {
                    let (value, coinbase, created) = utxos
                        .remove(&input.previous_output)
                        .expect("spends a known unspent output");
                    assert!(!coinbase || height >= created + 100, "coinbase maturity");
                    assert!(height >= created + 2, "spendable two blocks after creation");
                    value_in += value;
                }
                let value_out: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
                fees += value_in
                    .checked_sub(value_out)
                    .expect("value in >= value out");
            }
            let coinbase = self.tx(&txids[0]);
            let claimed: u64 = coinbase.output.iter().map(|o| o.value.to_sat()).sum();
            assert_eq!(
                claimed,
                (50_0000_0000u64 >> (height / halving)) + fees,
                "coinbase at {height}"
            );
            for txid in txids {
                let tx = self.tx(txid);
                for (vout, out) in tx.output.iter().enumerate() {
                    if let Some(address) = self.label(&out.script_pubkey) {
                        assert!(self.owners.contains_key(&address), "{address} has an owner");
                    }
                    let outpoint = OutPoint {
                        txid: *txid,
                        vout: vout as u32,
                    };
                    utxos.insert(outpoint, (out.value.to_sat(), tx.is_coinbase(), height));
                }
            }
        }
    }
}
