//! Address strings: address keys shown in the standard encoding of the
//! chain's network, and user input parsed back into keys.

use std::str::FromStr;

use anyhow::{bail, Result};
use bitcoin::{Address, Script};

use crate::network::Network;
use satflow_schema::script::{classify, AddrKey, AddrKind};

/// The standard string of an address, or `script-sha256:<hex>` for scripts
/// without an address form (bare multisig, non-standard).
pub fn encode(key: &AddrKey, network: Network) -> String {
    let hash = key.hash();
    let script: Vec<u8> = match key.kind() {
        AddrKind::P2pkh => [&[0x76, 0xa9, 0x14][..], hash, &[0x88, 0xac]].concat(),
        AddrKind::P2sh => [&[0xa9, 0x14][..], hash, &[0x87]].concat(),
        AddrKind::P2wpkh => [&[0x00, 0x14][..], hash].concat(),
        AddrKind::P2wsh => [&[0x00, 0x20][..], hash].concat(),
        AddrKind::P2tr => [&[0x51, 0x20][..], hash].concat(),
        AddrKind::ScriptHash => return format!("script-sha256:{}", hex::encode(hash)),
    };
    match Address::from_script(Script::from_bytes(&script), network.bitcoin()) {
        Ok(a) => a.to_string(),
        Err(_) => format!("script:{}", hex::encode(&script)),
    }
}

/// Parses what a user typed: an address of `network`, a raw scriptPubKey in
/// hex, or `script-sha256:<hex>`.
pub fn parse(input: &str, network: Network) -> Result<AddrKey> {
    let input = input.trim();
    if let Some(h) = input.strip_prefix("script-sha256:") {
        let bytes =
            hex::decode(h).map_err(|e| anyhow::anyhow!("address {input:?}: bad hex: {e}"))?;
        return AddrKey::new(AddrKind::ScriptHash, &bytes)
            .ok_or_else(|| anyhow::anyhow!("address {input:?}: script hash must be 32 bytes"));
    }
    match Address::from_str(input) {
        Ok(unchecked) => {
            if !unchecked.is_valid_for_network(network.bitcoin()) {
                bail!("address {input} is not an address of the {network} network");
            }
            let script = unchecked.assume_checked().script_pubkey();
            key_of_script(script.as_bytes(), input)
        }
        Err(addr_err) => match hex::decode(input) {
            Ok(script) => key_of_script(&script, input),
            Err(_) => bail!("{input:?} is neither an address nor a hex scriptPubKey: {addr_err}"),
        },
    }
}

fn key_of_script(script: &[u8], input: &str) -> Result<AddrKey> {
    match classify(script) {
        (_, Some(key)) => Ok(key),
        (_, None) => bail!("{input:?} is an OP_RETURN script, which has no address history"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind_on_mainnet() {
        for a in [
            "12cbQLTFMXRnSzktFkuoG3eHoMeFtpTu3S",
            "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy",
            "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
            "bc1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qccfmv3",
            "bc1p3p9z690l0ne2er7plv7w33ef2duxht580d4vg0dcexv5ke8q78aqg9lz7w",
        ] {
            let key = parse(a, Network::Main).unwrap();
            assert_eq!(encode(&key, Network::Main), a);
        }
    }

    #[test]
    fn other_networks_and_garbage_are_refused() {
        let err = parse("mss5NFyX96ix4erFMamR1gK3SsvUSMWcjE", Network::Main)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an address of the main network"), "{err}");
        assert!(parse("mss5NFyX96ix4erFMamR1gK3SsvUSMWcjE", Network::Test).is_ok());
        assert!(parse("TUCsTq7TofTCJRRoHk6RvhMoS2mJLm5Yzq", Network::Main).is_err());
        assert!(parse("6a0401020304", Network::Main)
            .unwrap_err()
            .to_string()
            .contains("OP_RETURN"));
    }

    #[test]
    fn raw_scripts_without_address_form() {
        let key = parse("51", Network::Main).unwrap(); // OP_TRUE, non-standard
        let shown = encode(&key, Network::Main);
        assert!(shown.starts_with("script-sha256:"));
        assert_eq!(parse(&shown, Network::Main).unwrap(), key);
        // A P2PKH script in hex is the same key as its address.
        let hexed = parse(
            "76a91462e907b15cbf27d5425399ebf6f0fb50ebb88f1888ac",
            Network::Main,
        )
        .unwrap();
        assert_eq!(
            encode(&hexed, Network::Main),
            "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"
        );
    }
}
