//! Progress of long work: a bar on a terminal, periodic log lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    total_bytes: u64,
    bytes: u64,
    blocks: u64,
    started: Instant,
    last_log: Instant,
}

const LOG_EVERY: Duration = Duration::from_secs(10);

impl Progress {
    pub fn new(total_bytes: u64, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total_bytes);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                )
                .expect("valid template"),
            );
            bar
        });
        let now = Instant::now();
        Progress {
            bar,
            total_bytes,
            bytes: 0,
            blocks: 0,
            started: now,
            last_log: now,
        }
    }

    pub fn advance(&mut self, blocks: u64, bytes: u64, height: u32) {
        self.blocks += blocks;
        self.bytes += bytes;
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let blocks_per_sec = self.blocks as f64 / secs;
        match &self.bar {
            Some(bar) => {
                bar.set_position(self.bytes);
                bar.set_message(format!("height {height}, {blocks_per_sec:.0} blocks/s"));
            }
            None if self.last_log.elapsed() >= LOG_EVERY => {
                self.last_log = Instant::now();
                tracing::info!(
                    "height {height}: {}/{} MB of blk data, {:.1} MB/s, {blocks_per_sec:.0} blocks/s",
                    self.bytes >> 20,
                    self.total_bytes >> 20,
                    self.bytes as f64 / 1e6 / secs
                );
            }
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
