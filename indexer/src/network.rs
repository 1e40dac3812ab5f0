//! The Bitcoin networks satflow knows, identified by the magic bytes that
//! start every record of a blk file.

use std::fmt;
use std::str::FromStr;

use bitcoin::BlockHash;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Network {
    Main,
    Test,
    Testnet4,
    Signet,
    Regtest,
}

impl Network {
    /// The first height at which every block's coinbase starts with its
    /// height (BIP34); testnet4, signet and regtest had it from the start.
    pub fn bip34_height(self) -> u32 {
        match self {
            Network::Main => 227_931,
            Network::Test => 21_111,
            Network::Testnet4 | Network::Signet | Network::Regtest => 1,
        }
    }

    pub const ALL: [Network; 5] = [
        Network::Main,
        Network::Test,
        Network::Testnet4,
        Network::Signet,
        Network::Regtest,
    ];

    /// The 4 bytes that open every blk record (and every P2P message).
    pub fn magic(self) -> [u8; 4] {
        match self {
            Network::Main => [0xf9, 0xbe, 0xb4, 0xd9],
            Network::Test => [0x0b, 0x11, 0x09, 0x07],
            Network::Testnet4 => [0x1c, 0x16, 0x3f, 0x28],
            Network::Signet => [0x0a, 0x03, 0xcf, 0x40],
            Network::Regtest => [0xfa, 0xbf, 0xb5, 0xda],
        }
    }

    pub fn from_magic(magic: [u8; 4]) -> Option<Network> {
        Network::ALL.into_iter().find(|n| n.magic() == magic)
    }

    pub fn name(self) -> &'static str {
        match self {
            Network::Main => "main",
            Network::Test => "test",
            Network::Testnet4 => "testnet4",
            Network::Signet => "signet",
            Network::Regtest => "regtest",
        }
    }

    /// rust-bitcoin's view of the network, for address encoding.
    pub fn bitcoin(self) -> bitcoin::Network {
        match self {
            Network::Main => bitcoin::Network::Bitcoin,
            Network::Test => bitcoin::Network::Testnet,
            Network::Testnet4 => bitcoin::Network::Testnet4,
            Network::Signet => bitcoin::Network::Signet,
            Network::Regtest => bitcoin::Network::Regtest,
        }
    }

    pub fn genesis_hash(self) -> BlockHash {
        bitcoin::constants::genesis_block(self.bitcoin()).block_hash()
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "main" | "mainnet" | "bitcoin" => Ok(Network::Main),
            "test" | "testnet" | "testnet3" => Ok(Network::Test),
            "testnet4" => Ok(Network::Testnet4),
            "signet" => Ok(Network::Signet),
            "regtest" => Ok(Network::Regtest),
            _ => Err(format!(
                "unknown network {s:?} (expected main, test, testnet4, signet or regtest)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magics_are_distinct_and_round_trip() {
        for n in Network::ALL {
            assert_eq!(Network::from_magic(n.magic()), Some(n));
            assert_eq!(n.name().parse::<Network>(), Ok(n));
        }
        assert_eq!(Network::from_magic([0, 0, 0, 0]), None);
    }

    #[test]
    fn genesis_hashes_are_the_real_ones() {
        assert_eq!(
            Network::Main.genesis_hash().to_string(),
            "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
        );
        assert_eq!(
            Network::Regtest.genesis_hash().to_string(),
            "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
        );
    }
}
