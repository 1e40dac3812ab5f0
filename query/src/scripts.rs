//! What answers show of an output script beyond what the index keeps (its
//! type and address key): the script-type enum, the bech32m address of a
//! witness program the index files under its script's hash, and the data
//! of an OP_RETURN. The scripts themselves come from the blk files
//! (`Index::read_tx`).

use std::str::FromStr;

use bitcoin::script::Instruction;
use bitcoin::{Address, Script};
use satflow_indexer::Network;
use satflow_proto::v1 as pb;
use satflow_schema::script::{classify, ScriptType};

pub(crate) fn kind(t: ScriptType) -> pb::ScriptType {
    match t {
        ScriptType::Unknown => pb::ScriptType::Unspecified,
        ScriptType::NonStandard => pb::ScriptType::Nonstandard,
        ScriptType::P2pk => pb::ScriptType::P2pk,
        ScriptType::P2pkh => pb::ScriptType::P2pkh,
        ScriptType::P2sh => pb::ScriptType::P2sh,
        ScriptType::P2wpkh => pb::ScriptType::P2wpkh,
        ScriptType::P2wsh => pb::ScriptType::P2wsh,
        ScriptType::P2tr => pb::ScriptType::P2tr,
        ScriptType::Multisig => pb::ScriptType::Multisig,
        ScriptType::OpReturn => pb::ScriptType::OpReturn,
        ScriptType::WitnessUnknown => pb::ScriptType::WitnessUnknown,
        ScriptType::AnyoneCanSpend => pb::ScriptType::AnyoneCanSpend,
    }
}

/// The bech32m address of a witness program of version 1 to 16 other than
/// P2TR (pay-to-anchor, witness v2+). The index files these under their
/// script's SHA-256 (`AddrKey::for_script`), from which the address cannot
/// be recovered, so it is rendered from the script. None for every other
/// script, a version 0 program of a length BIP141 forbids included.
pub(crate) fn witness_address(script: &[u8], network: Network) -> Option<String> {
    if classify(script).0 != ScriptType::WitnessUnknown {
        return None;
    }
    Address::from_script(Script::from_bytes(script), network.bitcoin())
        .ok()
        .map(|a| a.to_string())
}

/// The bech32m address an address request named, when it names such a
/// witness program by its address or by its script in hex: shown back as
/// asked, rather than as the `script-sha256:<hex>` of its key.
pub(crate) fn requested_witness_address(given: &str, network: Network) -> Option<String> {
    let given = given.trim();
    let script = match Address::from_str(given) {
        Ok(a) if a.is_valid_for_network(network.bitcoin()) => {
            a.assume_checked().script_pubkey().into_bytes()
        }
        Ok(_) => return None,
        Err(_) => hex::decode(given).ok()?,
    };
    witness_address(&script, network)
}

/// The payload of an OP_RETURN script: the data of the pushes after
/// OP_RETURN, concatenated; when anything else follows it (an opcode such
/// as a runestone's OP_13, a push running past the end), the bytes after
/// OP_RETURN as they are, so that nothing is dropped. None for other
/// scripts.
pub(crate) fn op_return_data(script: &[u8]) -> Option<Vec<u8>> {
    let (&0x6a, rest) = script.split_first()? else {
        return None;
    };
    let mut data = Vec::new();
    for ins in Script::from_bytes(rest).instructions() {
        match ins {
            Ok(Instruction::PushBytes(b)) => data.extend_from_slice(b.as_bytes()),
            _ => return Some(rest.to_vec()),
        }
    }
    Some(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    #[test]
    fn witness_programs_of_version_one_and_up_get_their_bech32m_address() {
        // Pay-to-anchor (BIP431's P2A).
        assert_eq!(
            witness_address(&h("51024e73"), Network::Main).as_deref(),
            Some("bc1pfeessrawgf")
        );
        let v2 = h("5210751e76e8199196d454941c45d1b3a323");
        let shown = witness_address(&v2, Network::Regtest).unwrap();
        assert!(shown.starts_with("bcrt1z"), "{shown}");
        assert_eq!(
            requested_witness_address(&shown, Network::Regtest),
            Some(shown.clone())
        );
        assert_eq!(
            requested_witness_address("51024e73", Network::Main).as_deref(),
            Some("bc1pfeessrawgf")
        );
        // Another network's address, standard templates, a v0 program of a
        // forbidden length: none.
        assert_eq!(requested_witness_address(&shown, Network::Main), None);
        for script in [
            "0014751e76e8199196d454941c45d1b3a323f1433bd6",
            "5120a60869f0dbcf1dc659c9cecbaf8050135ea9e8cdc487053f1dc6880949dc684c",
            "0003010203",
            "51",
        ] {
            assert_eq!(witness_address(&h(script), Network::Main), None, "{script}");
        }
    }

    #[test]
    fn op_return_payloads() {
        assert_eq!(
            op_return_data(&h("6a0b68656c6c6f20776f726c64")),
            Some(b"hello world".to_vec())
        );
        assert_eq!(op_return_data(&h("6a")), Some(Vec::new()));
        assert_eq!(op_return_data(&h("6a01aa02bbcc")), Some(h("aabbcc")));
        // A runestone: OP_RETURN OP_13 <data>, kept as it is.
        assert_eq!(op_return_data(&h("6a5d0314c0a2")), Some(h("5d0314c0a2")));
        assert_eq!(op_return_data(&h("6a05aabb")), Some(h("05aabb")));
        assert_eq!(op_return_data(&h("51")), None);
    }
}
