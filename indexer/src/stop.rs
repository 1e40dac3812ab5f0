//! A request to end a run early and cleanly: after the batch being
//! written, with everything before it committed, as if the blocks
//! directory had ended there. The next run goes on from that tip.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};

/// Shared between the run (which checks it between batches) and whoever
/// asks it to stop: a signal handler, or a test.
#[derive(Clone, Debug, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    pub fn request(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// SIGTERM and SIGINT request a stop; a second one ends the process at
    /// once (exit status 1), for an operator who will not wait.
    pub fn on_signals(&self) -> Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        for signal in [SIGTERM, SIGINT] {
            // Registered first, so it sees the flag as the second signal
            // finds it: set only by an earlier one.
            signal_hook::flag::register_conditional_shutdown(signal, 1, self.0.clone())
                .and_then(|_| signal_hook::flag::register(signal, self.0.clone()))
                .with_context(|| format!("handling signal {signal}"))?;
        }
        Ok(())
    }
}
