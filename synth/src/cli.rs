//! Command-line arguments of `satflow synth`.

use std::path::PathBuf;

use anyhow::{bail, Context};

/// Which chain the generated directory pretends to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkChoice {
    /// Regtest magic and genesis, nBits 0x207fffff (real PoW), halving every 150 blocks.
    Regtest,
    /// Mainnet magic and genesis, mainnet-like nBits (PoW not real), halving every 210,000 blocks.
    Main,
}

/// Write a realistic Bitcoin Core blocks directory plus ground truth.
#[derive(Clone, Debug, clap::Args)]
pub struct SynthArgs {
    /// Output directory (created if missing); blk*.dat go here, truth files to DIR/truth/.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Amount of blk record data to write, e.g. 500MB, 2GB, 4GiB or plain bytes.
    #[arg(long, value_parser = parse_size, default_value = "100MB")]
    pub size: u64,
    /// Seed of every random choice: the same seed gives byte-identical output.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Chain to imitate.
    #[arg(long, value_enum, default_value_t = NetworkChoice::Regtest)]
    pub network: NetworkChoice,
    /// Obfuscate blk files with a random 8-byte key written to xor.dat, as Core 28+ does.
    #[arg(long)]
    pub xor: bool,
    /// Cut the last record in the middle, as a node killed while writing leaves it.
    #[arg(long)]
    pub truncate_tail: bool,
    /// Share of users who bank at exchange-0, a large custodial exchange
    /// that also does that share of the sweeps and withdrawals, and share
    /// (at least the usual 30%) of payments that go to the payer's
    /// exchange account: the whale's deposit addresses, linked by the
    /// sweeps that spend them together, make one entity of millions of
    /// addresses on a chain of a few GB, as the largest exchanges are on
    /// mainnet. 0 (the default): users spread evenly over eight exchanges.
    #[arg(long, default_value_t = 0.0, value_parser = parse_share)]
    pub whale_share: f64,
    /// Also plant labelled suspicious patterns (layering, fan-out-in,
    /// fan-in, dusting, CoinJoin reunions, CoinJoin outputs cashed out at
    /// an exchange), each by actors of its own kind, listed with the peel
    /// chains in truth/patterns.csv. They draw from a random stream of
    /// their own: without the flag the chain is byte for byte what it was.
    #[arg(long)]
    pub plant_patterns: bool,
    /// Also plant services for measuring a service categoriser: 3 dice-like
    /// gambling services (bets at a handful of reused addresses, winners
    /// paid back within 1-3 blocks) and 3 payment processors (invoices to
    /// fresh addresses, swept every 6-12 blocks to 2-6 merchants), listed
    /// in truth/actors.csv as gambling-N, processor-N and merchant-N. They
    /// draw from a random stream of their own: without the flag the chain
    /// is byte for byte what it was.
    #[arg(long)]
    pub plant_services: bool,
    /// Do not show a progress bar or progress lines.
    #[arg(long)]
    pub quiet: bool,
}

/// Parses a share between 0 and 1.
fn parse_share(text: &str) -> anyhow::Result<f64> {
    let share: f64 = text
        .trim()
        .parse()
        .with_context(|| format!("bad share {text:?}"))?;
    if !(0.0..=1.0).contains(&share) {
        bail!("share {share} is not between 0 and 1");
    }
    Ok(share)
}

/// Parses "500MB", "2GB", "4GiB", "1.5GB" or "123456" into bytes (KB/MB/GB are powers of 1000).
pub fn parse_size(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("bad size {text:?}"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => bail!("unknown size unit {other:?} in {text:?}"),
    };
    Ok((number * scale as f64).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("2GB").unwrap(), 2_000_000_000);
        assert_eq!(parse_size("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_size("1.5gb").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("12345").unwrap(), 12345);
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("MB").is_err());
    }
}
