//! Line-per-entry label sets: `Format::Csv` (`address,label,category,source`,
//! an optional header) and `Format::List` (one address per line). Blank
//! lines and `#` comments are left out of both.

use super::entry::{accept, Defaults, Entry, Parsed};
use crate::network::Network;

pub(super) fn parse(text: &str, network: Network, d: &Defaults, csv: bool) -> Parsed {
    let mut out = Parsed::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = match csv {
            true => line.split(',').map(str::trim).collect(),
            false => vec![line],
        };
        if csv && i == 0 && f[0].eq_ignore_ascii_case("address") {
            continue;
        }
        let field = |n: usize| f.get(n).copied().filter(|s| !s.is_empty());
        accept(
            &mut out,
            network,
            d,
            Entry {
                line: i + 1,
                address: f[0],
                label: field(1),
                category: field(2),
                source: field(3),
            },
        );
    }
    out
}
