//! Two other Rust block readers on a blocks directory, for the
//! `index_throughput` benchmark to show beside satflow on the same chain:
//!
//!     readers bbp DIR            bitcoin-block-parser: every block parsed on all cores, every txid hashed
//!     readers bi DIR NETWORK     blocks_iterator: blocks in height order with every prevout resolved
//!
//! Prints `blocks txs seconds` on one line.

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: readers bbp DIR | readers bi DIR NETWORK";
    let (mode, dir) = match (args.get(1), args.get(2)) {
        (Some(mode), Some(dir)) => (mode.as_str(), dir.as_str()),
        _ => panic!("{usage}"),
    };
    let start = Instant::now();
    let (blocks, txs) = match mode {
        "bbp" => bitcoin_block_parser::blocks::BlockParser::new(dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .parse(|block| block.txdata.iter().map(|tx| tx.compute_txid()).count() as u64)
            .fold((0u64, 0u64), |(b, t), n| (b + 1, t + n)),
        "bi" => {
            let network: blocks_iterator::bitcoin::Network = args
                .get(3)
                .expect(usage)
                .parse()
                .unwrap_or_else(|e| panic!("network: {e}"));
            blocks_iterator::iter(blocks_iterator::Config::new(dir, network))
                .fold((0u64, 0u64), |(b, t), block| (b + 1, t + block.txids().len() as u64))
        }
        _ => panic!("{usage}"),
    };
    println!("{blocks} {txs} {:.3}", start.elapsed().as_secs_f64());
}
