//! Progress display: a bar on a terminal, a line every few percent otherwise (logs, CI).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

pub enum Progress {
    Bar(ProgressBar),
    Lines { total: u64, next_percent: u64 },
    Quiet,
}

impl Progress {
    pub fn new(total: u64, quiet: bool) -> Self {
        if quiet {
            Progress::Quiet
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "synth {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template");
            bar.set_style(style);
            Progress::Bar(bar)
        } else {
            Progress::Lines {
                total: total.max(1),
                next_percent: 10,
            }
        }
    }

    pub fn set(&mut self, done: u64, height: u32) {
        match self {
            Progress::Bar(bar) => bar.set_position(done),
            Progress::Lines {
                total,
                next_percent,
            } => {
                let percent = done * 100 / *total;
                if percent >= *next_percent {
                    eprintln!(
                        "synth: {percent}% ({} MB, height {height})",
                        done / 1_000_000
                    );
                    *next_percent = percent / 10 * 10 + 10;
                }
            }
            Progress::Quiet => {}
        }
    }

    pub fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
