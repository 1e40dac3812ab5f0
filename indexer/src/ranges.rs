//! Dense id spaces (outputs, addresses) cut into ranges, so that a pass
//! over a family's rows runs on every worker, each scanning its own range.

use rayon::prelude::*;

/// Ranges per worker: enough that one slow range does not hold up the rest.
const PER_WORKER: usize = 4;

/// How many ranges a pass cuts its work into: a few for each worker of
/// the current pool.
pub fn parts() -> usize {
    rayon::current_num_threads() * PER_WORKER
}

/// `[0, end)` cut into `parts` ranges of about equal length.
pub fn split(end: u64) -> impl ParallelIterator<Item = (u64, u64)> {
    let n = parts() as u64;
    let step = end.div_ceil(n.max(1)).max(1);
    (0..end.div_ceil(step))
        .into_par_iter()
        .map(move |i| (i * step, ((i + 1) * step).min(end)))
}
