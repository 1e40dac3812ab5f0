//! What the generator's tests share: their arguments, and reading the
//! truth files as the generator writes them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use bitcoin::hashes::Hash;
use bitcoin::{Address, Network, Script};
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
