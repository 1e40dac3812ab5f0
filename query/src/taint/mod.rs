//! Taint tracing: where coins went (forward) and where they came from
//! (backward), under the poison, haircut, FIFO, LIFO and TIHO policies
//! (`policy`), walked through the flow graph by `engine`.

mod engine;
mod policy;
mod queue;
#[cfg(test)]
mod tests;

pub use engine::{trace, Direction, End, Event, Kind, Limits, Sink, Stop, StopAt, Totals};
pub use policy::{Haircut, Ordered, Poison, Policy, PolicyName, Spans, Split, Tiho};

use satflow_indexer::flow::FlowView;

/// `trace` with the policy chosen at run time; None when the policy has no
/// reading in `direction` (TIHO backward).
pub fn trace_with(
    policy: PolicyName,
    g: FlowView<'_>,
    direction: Direction,
    sources: &[u64],
    limits: &Limits,
    sink: &mut dyn Sink,
) -> Option<(Totals, End)> {
    if direction == Direction::Backward && policy == PolicyName::Tiho {
        return None;
    }
    Some(match policy {
        PolicyName::Poison => trace(g, &Poison, direction, sources, limits, sink),
        PolicyName::Haircut => trace(g, &Haircut, direction, sources, limits, sink),
        PolicyName::Fifo => trace(
            g,
            &Ordered {
                last_in_first_out: false,
            },
            direction,
            sources,
            limits,
            sink,
        ),
        PolicyName::Lifo => trace(
            g,
            &Ordered {
                last_in_first_out: true,
            },
            direction,
            sources,
            limits,
            sink,
        ),
        PolicyName::Tiho => trace(g, &Tiho, direction, sources, limits, sink),
    })
}
