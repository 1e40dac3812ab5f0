//! Runs the generator stand-alone (what `satflow synth` does), e.g. for measuring speed:
//! `cargo run --release -p satflow-synth --example synth -- --out /tmp/synth --size 1GB`

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: satflow_synth::SynthArgs,
}

fn main() -> anyhow::Result<()> {
    let summary = satflow_synth::run(&Cli::parse().args)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
