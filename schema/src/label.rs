//! Label rows: `labels` (who is behind an address, keyed by the address
//! itself so that labels outlive renumbering) and `pool_tags` (coinbase
//! tags of mining pools).

use std::fmt;
use std::str::FromStr;

use crate::codec::{Codec, Dec, KeyPrefix, RowError};
use crate::script::{AddrKey, AddrKind};

/// The category vocabulary. Imports map the names label sets use onto it
/// (GraphSense's `miner` is a mining pool, `mixing_service` a mixer, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Category {
    Exchange = 1,
    MiningPool = 2,
    Mixer = 3,
    Sanctioned = 4,
    DarknetMarket = 5,
    Ransomware = 6,
    Scam = 7,
    Gambling = 8,
    Service = 9,
    Theft = 10,
    Other = 11,
}

impl Category {
    pub const ALL: [Category; 11] = [
        Category::Exchange,
        Category::MiningPool,
        Category::Mixer,
        Category::Sanctioned,
        Category::DarknetMarket,
        Category::Ransomware,
        Category::Scam,
        Category::Gambling,
        Category::Service,
        Category::Theft,
        Category::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::Exchange => "exchange",
            Category::MiningPool => "mining_pool",
            Category::Mixer => "mixer",
            Category::Sanctioned => "sanctioned",
            Category::DarknetMarket => "darknet_market",
            Category::Ransomware => "ransomware",
            Category::Scam => "scam",
            Category::Gambling => "gambling",
            Category::Service => "service",
            Category::Theft => "theft",
            Category::Other => "other",
        }
    }

    pub fn from_u8(b: u8) -> Option<Category> {
        Category::ALL.into_iter().find(|c| *c as u8 == b)
    }

    /// A label set's category name, in our vocabulary or one of the other
    /// names label sets use for it.
    pub fn from_set_name(s: &str) -> Option<Category> {
        let s = s.trim().to_ascii_lowercase().replace([' ', '-'], "_");
        if let Some(c) = Category::ALL.into_iter().find(|c| c.name() == s) {
            return Some(c);
        }
        Some(match s.as_str() {
            "miner" | "mining" | "pool" => Category::MiningPool,
            "mixing_service" | "mixing" | "coinjoin" => Category::Mixer,
            "market" | "darknet" | "darkweb" => Category::DarknetMarket,
            "wallet_service" | "walletservice" | "organization" | "payment_processor" => {
                Category::Service
            }
            "sanction" | "sanctions" | "ofac" => Category::Sanctioned,
            "hack" | "stolen" => Category::Theft,
            "user" | "unknown" => Category::Other,
            _ => return None,
        })
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Category {
    type Err = String;

    fn from_str(s: &str) -> Result<Category, String> {
        Category::from_set_name(s).ok_or_else(|| {
            let names: Vec<_> = Category::ALL.iter().map(|c| c.name()).collect();
            format!("unknown category {s:?}: one of {}", names.join(", "))
        })
    }
}

/// `labels` key: address key · label set · 0x00 · label. An address key's
/// kind byte fixes its length, so one address's rows are one key prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelKey {
    pub address: AddrKey,
    /// The label set it was imported with, the unit `satflow labels
    /// remove` takes away.
    pub set: String,
    pub label: String,
}

impl KeyPrefix<AddrKey> for LabelKey {}

impl Codec for LabelKey {
    type Bytes = Vec<u8>;

    fn encode(&self) -> Vec<u8> {
        let mut k = self.address.to_bytes();
        k.extend_from_slice(self.set.as_bytes());
        k.push(0);
        k.extend_from_slice(self.label.as_bytes());
        k
    }

    fn decode(b: &[u8]) -> Result<LabelKey, RowError> {
        let mut d = Dec::new("label key", b);
        let kind = AddrKind::from_u8(d.u8()?).ok_or_else(|| d.err())?;
        let address = AddrKey::new(kind, d.bytes(kind.hash_len())?).ok_or_else(|| d.err())?;
        let rest = d.rest();
        let sep = rest.iter().position(|&c| c == 0).ok_or(RowError {
            row: "label key",
            len: b.len(),
        })?;
        Ok(LabelKey {
            address,
            set: String::from_utf8_lossy(&rest[..sep]).into_owned(),
            label: String::from_utf8_lossy(&rest[sep + 1..]).into_owned(),
        })
    }
}

/// `labels` value: category (u8) · source (UTF-8, often a URL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelValue {
    pub category: Category,
    pub source: String,
}

impl Codec for LabelValue {
    type Bytes = Vec<u8>;

    fn encode(&self) -> Vec<u8> {
        let mut v = vec![self.category as u8];
        v.extend_from_slice(self.source.as_bytes());
        v
    }

    fn decode(b: &[u8]) -> Result<LabelValue, RowError> {
        let mut d = Dec::new("label", b);
        let category = Category::from_u8(d.u8()?).ok_or_else(|| d.err())?;
        Ok(LabelValue {
            category,
            source: String::from_utf8_lossy(d.rest()).into_owned(),
        })
    }
}

/// `pool_tags` value, keyed by the coinbase tag: label set · 0x00 · pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolTagValue {
    pub set: String,
    pub pool: String,
}

impl Codec for PoolTagValue {
    type Bytes = Vec<u8>;

    fn encode(&self) -> Vec<u8> {
        format!("{}\0{}", self.set, self.pool).into_bytes()
    }

    fn decode(b: &[u8]) -> Result<PoolTagValue, RowError> {
        let text = String::from_utf8_lossy(b);
        let (set, pool) = text.split_once('\0').ok_or(RowError {
            row: "pool tag",
            len: b.len(),
        })?;
        Ok(PoolTagValue {
            set: set.into(),
            pool: pool.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Category lives in satflow_schema now; this checks the names of the
    // label sets imported here still map onto it.
    #[test]
    fn label_sets_category_names_map_onto_the_vocabulary() {
        for (name, c) in [
            ("exchange", Category::Exchange),
            ("miner", Category::MiningPool),
            ("mixing_service", Category::Mixer),
            ("market", Category::DarknetMarket),
            ("wallet_service", Category::Service),
            ("Darknet Market", Category::DarknetMarket),
            ("user", Category::Other),
        ] {
            assert_eq!(Category::from_set_name(name), Some(c), "{name}");
        }
        assert!("exchanges and friends".parse::<Category>().is_err());
        for c in Category::ALL {
            assert_eq!(c.name().parse::<Category>(), Ok(c));
            assert_eq!(Category::from_u8(c as u8), Some(c));
        }
    }

    #[test]
    fn label_rows_round_trip_and_group_by_address() {
        let address = AddrKey::new(AddrKind::P2wpkh, &[7; 20]).unwrap();
        let key = LabelKey {
            address,
            set: "ofac".into(),
            label: "Lazarus Group".into(),
        };
        let bytes = key.encode();
        assert!(bytes.starts_with(&address.encode()));
        assert_eq!(LabelKey::decode(&bytes).unwrap(), key);
        assert!(LabelKey::decode(&bytes[..10]).is_err());
        assert!(LabelKey::decode(&address.encode()).is_err());
        let value = LabelValue {
            category: Category::Sanctioned,
            source: "https://example.org".into(),
        };
        assert_eq!(LabelValue::decode(&value.encode()).unwrap(), value);
        assert!(LabelValue::decode(&[0]).is_err());
        let tag = PoolTagValue {
            set: "pools".into(),
            pool: "F2Pool".into(),
        };
        assert_eq!(PoolTagValue::decode(&tag.encode()).unwrap(), tag);
        assert!(PoolTagValue::decode(b"no separator").is_err());
    }
}
