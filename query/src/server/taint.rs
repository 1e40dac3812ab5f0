//! `satflow.v1.Taint`: each trace runs on a low-priority thread of its
//! own (it may walk millions of transactions; `niced`) and streams its
//! hits in batches (`batched`) through a bounded channel, so a slow reader
//! slows the trace rather than filling memory, and a reader that goes away
//! stops it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use rustc_hash::FxHashMap;
use satflow_indexer::flow::Flow;
use satflow_proto::v1 as pb;
use satflow_schema::AddrId;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tonic::{Request, Response, Status};

use super::batched::{self, Batch, Batched};
use super::limits::{Deadline, Place};
use super::niced::NicedPool;
use super::shared::Shared;
use crate::args::{self, invalid};
use crate::built;
use crate::error::{internal, QueryError};
use crate::index::Index;
use crate::label_index::LabelIndex;
use crate::taint::{
    trace_with, Direction, End, Event, Kind, Limits, PolicyName, Sink, Stop, Totals,
};
use crate::trace::{self, Stops};

/// `max_hops` when the request leaves it 0.
const DEFAULT_HOPS: u32 = 10;
/// `max_transactions` when the request leaves it 0 (or the server's
/// ceiling, when lower).
const DEFAULT_TXS: u64 = 1_000_000;
/// The ceiling on `max_transactions` of traces and exposure unless the
/// operator sets one (`satflow serve --max-trace-transactions`): a trace
/// holds ~13.6 MiB of heap per million transactions visited, so ~136 MiB.
pub const MAX_TRACE_TXS: u64 = 10_000_000;
/// Members of the clusters a trace stops at that are listed up front (a
/// set of ~9 MiB at most); beyond, each coin's cluster is looked up.
pub const MAX_STOP_LISTED: u64 = 900_000;

/// What the operator bounds traces (and exposure) by.
#[derive(Clone, Copy, Debug)]
pub struct TraceBounds {
    /// The most transactions a trace may ask to visit.
    pub max_txs: u64,
    /// See `MAX_STOP_LISTED`.
    pub max_listed: u64,
}
/// Clusters listed in a summary.
const SUMMARY_CLUSTERS: usize = 1000;
/// How long a stream waits for a caller that stopped reading it.
pub(super) const STALLED: Duration = Duration::from_secs(30);
/// Hits are sent to the caller in batches of about this many encoded
/// bytes (an HTTP/2 frame's worth): large enough that the stream's task
/// wakes once for many hits, small enough that the other answers on the
/// same connection do not queue behind a trace's.
const BATCH_BYTES: usize = 16 * 1024;
/// A batch is held back not much longer than this (the walk asks its sink
/// every few thousand transactions), so that a trace that finds few hits
/// still streams them as it goes.
const BATCH_WAIT: Duration = Duration::from_millis(20);
/// Batches waiting for the caller: about 64 KiB of hits.
const BATCHES_QUEUED: usize = 4;

pub struct TaintService {
    shared: Arc<Shared>,
    slots: Slots,
    bounds: TraceBounds,
}

impl TaintService {
    pub fn new(shared: Arc<Shared>, slots: Slots, bounds: TraceBounds) -> TaintService {
        TaintService {
            shared,
            slots,
            bounds,
        }
    }
}

/// Places for traces (taint traces, exposure and screenings) running at
/// once, and the low-priority threads they run on: two a place, because a
/// trace gives its place back before it sends its summary (see
/// `run_trace`), and a caller that stopped reading holds that send, and
/// its thread, for up to `STALLED`; the next trace then runs on a spare.
#[derive(Clone)]
pub struct Slots {
    free: Arc<Semaphore>,
    max: usize,
    pub(super) threads: Arc<NicedPool>,
}

impl Slots {
    pub fn new(max: usize) -> anyhow::Result<Slots> {
        Ok(Slots {
            free: Arc::new(Semaphore::new(max)),
            max,
            threads: Arc::new(NicedPool::new("satflow-trace", 2 * max)?),
        })
    }

    /// A place, or RESOURCE_EXHAUSTED.
    pub fn take(&self) -> Result<OwnedSemaphorePermit, Status> {
        Arc::clone(&self.free).try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{} traces are running, the most this server runs at once (satflow serve --max-traces)",
                self.max
            ))
        })
    }
}

type Events = mpsc::Sender<Batch<Result<pb::TraceEvent, Status>>>;

#[tonic::async_trait]
impl pb::taint_server::Taint for TaintService {
    type TraceStream = Batched<Result<pb::TraceEvent, Status>>;

    async fn trace(
        &self,
        request: Request<pb::TraceRequest>,
    ) -> Result<Response<Self::TraceStream>, Status> {
        let place = request.extensions().get::<Place>().cloned();
        let r = request.get_ref();
        let (policy, direction, limits) = parse(r, self.bounds.max_txs)?;
        let slot = self.slots.take()?;
        let sources = r.sources.clone();
        let stops = r.clone();
        let deadline = Deadline::of(&request);
        let max_sources = limits.max_txs.min(10_000_000) as usize;
        let max_listed = self.bounds.max_listed;
        let (flow, sources, stops) = self
            .shared
            .answer(&request, move |index, deadline| {
                let flow = index.flow()?;
                let g = flow.view();
                let alive = &mut || !deadline.expired();
                let sources = trace::sources(index, &g, &sources, max_sources, alive)?;
                let stops = trace::stops(index, &stops, max_listed)?;
                Ok((Arc::clone(&flow), sources, stops))
            })
            .await?
            .into_inner();
        let (tx, stream) = batched::channel(BATCHES_QUEUED);
        let shared = Arc::clone(&self.shared);
        self.slots.threads.spawn(move || {
            let _held = place;
            // A bug must not end the stream as if the trace were complete.
            let run = std::panic::AssertUnwindSafe(|| {
                run_trace(
                    slot,
                    shared.index(),
                    &flow,
                    policy,
                    direction,
                    &sources,
                    limits,
                    stops,
                    deadline,
                    &tx,
                )
            });
            if std::panic::catch_unwind(run).is_err() {
                send_error(&tx, internal(format_args!("a trace panicked")));
            }
        });
        Ok(Response::new(stream))
    }
}

/// Runs one trace on this (trace) thread, streaming to `tx`. The slot
/// is given back when the walk ends, before the summary goes out: a caller
/// that has read the end may start its next trace at once.
#[allow(clippy::too_many_arguments)]
fn run_trace(
    slot: OwnedSemaphorePermit,
    index: &Index,
    flow: &Flow,
    policy: PolicyName,
    direction: Direction,
    sources: &[u64],
    limits: Limits<'static>,
    stops: Stops,
    deadline: Deadline,
    tx: &Events,
) {
    let g = flow.view();
    let cover = match built::cover_or_none(index.store()) {
        Ok(c) => c,
        Err(e) => {
            drop(slot);
            return send_error(tx, e.into());
        }
    };
    // Each coin reached is asked about: at a stop address, or in a cluster
    // stopped at? Nothing is asked when the request names no stop.
    let stopping = !stops.is_empty();
    let mut rule = stops.rule(index.store());
    let limits = limits.with_stop(match stopping {
        true => Stop::at(&mut rule),
        false => Stop::default(),
    });
    let mut sink = StreamSink {
        index,
        g,
        events: tx,
        deadline,
        expired: false,
        failed: None,
        cover,
        labels: index.label_index(),
        hits: trace::Hits::default(),
        clusters: FxHashMap::default(),
        batch: Vec::new(),
        batch_bytes: 0,
        batch_since: Instant::now(),
    };
    let (totals, end) = trace_with(policy, g, direction, sources, &limits, &mut sink)
        .expect("parse refuses policies without a reading in the direction");
    let max_txs = limits.max_txs;
    drop(limits);
    drop(slot);
    // The hits found before the end, or before a failure.
    sink.flush();
    if let Some(status) = sink.failed.take().or(rule.failure().map(Status::from)) {
        return send_error(tx, status);
    }
    let by_label = sink.hits.by_label(&sink.labels);
    let summary = summary(
        &totals,
        end == End::Complete,
        g.tip_height(),
        sink.clusters,
        by_label,
    );
    send(
        tx,
        vec![Ok(pb::TraceEvent {
            event: Some(pb::trace_event::Event::Summary(summary)),
        })],
    );
    match end {
        End::Complete => {}
        End::Budget => send_error(
            tx,
            Status::resource_exhausted(format!(
                "the trace visited max_transactions = {} transactions with {} sat still on its way; the hits and summary above are what it found",
                max_txs, totals.unfinished
            )),
        ),
        End::Stopped if sink.expired => send_error(tx, deadline.exceeded()),
        // The caller went away, or stopped reading.
        End::Stopped => {}
    }
}

fn send_error(tx: &Events, status: Status) {
    send(tx, vec![Err(status)]);
}

/// How a send from a trace's thread ended.
enum Sent {
    /// In the caller's queue.
    Queued,
    /// The caller went away.
    Closed,
    /// The caller stopped reading for `STALLED`.
    Stalled,
}

/// Sends from a blocking thread, waiting only when the caller's queue is
/// full, and then giving up on a caller that stopped reading for
/// `STALLED`.
fn send(tx: &Events, batch: Batch<Result<pb::TraceEvent, Status>>) -> Sent {
    let batch = match tx.try_send(batch) {
        Ok(()) => return Sent::Queued,
        Err(mpsc::error::TrySendError::Closed(_)) => return Sent::Closed,
        Err(mpsc::error::TrySendError::Full(batch)) => batch,
    };
    let sent = tokio::runtime::Handle::current()
        .block_on(async { tokio::time::timeout(STALLED, tx.send(batch)).await });
    match sent {
        Ok(Ok(())) => Sent::Queued,
        Ok(Err(_)) => Sent::Closed,
        Err(_) => {
            tracing::warn!("a trace's caller stopped reading for {STALLED:?}: trace ended");
            Sent::Stalled
        }
    }
}

fn parse(
    r: &pb::TraceRequest,
    ceiling: u64,
) -> Result<(PolicyName, Direction, Limits<'static>), QueryError> {
    let policy = args::policy(r.policy)?;
    let direction = match pb::TraceDirection::try_from(r.direction) {
        Ok(pb::TraceDirection::Forward) => Direction::Forward,
        Ok(pb::TraceDirection::Backward) => Direction::Backward,
        Err(_) => {
            return Err(invalid(
                "direction",
                format!("{} is no direction", r.direction),
            ))
        }
    };
    if policy == PolicyName::Tiho && direction == Direction::Backward {
        return Err(invalid("policy", "tiho traces forward only"));
    }
    let max_txs = trace::max_transactions(r.max_transactions, DEFAULT_TXS, ceiling)?;
    let to = r.to_height.unwrap_or(u32::MAX);
    if r.from_height > to {
        return Err(invalid(
            "from_height",
            format!("{} is above to_height {to}", r.from_height),
        ));
    }
    let limits = Limits {
        max_hops: match r.max_hops {
            0 => DEFAULT_HOPS,
            n => n,
        },
        max_txs,
        min_amount: r.min_amount,
        heights: r.from_height..=to,
        stop: Stop::default(),
        stop_sources: false,
        transit: r.include_transit,
    };
    Ok((policy, direction, limits))
}

/// Streams hits to the caller, tallying where the value ended by cluster.
struct StreamSink<'a> {
    index: &'a Index,
    g: satflow_indexer::flow::FlowView<'a>,
    events: &'a Events,
    deadline: Deadline,
    expired: bool,
    /// A hit that could not be read: the trace stops and the call fails.
    failed: Option<Status>,
    /// Address numbers below this have cluster ids.
    cover: AddrId,
    labels: Arc<LabelIndex>,
    /// The clusters hit so far and what ended in them (see `trace::Hits`).
    hits: trace::Hits,
    clusters: FxHashMap<u64, u64>,
    /// Hits not sent yet, their encoded size, and since when the first of
    /// them waits.
    batch: Batch<Result<pb::TraceEvent, Status>>,
    batch_bytes: usize,
    batch_since: Instant,
}

impl StreamSink<'_> {
    /// Sends the hits held back; false when the caller is gone or stalled.
    fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        // A caller that stops reading holds its trace only so long.
        match send(self.events, batch) {
            Sent::Queued => true,
            Sent::Closed => false,
            Sent::Stalled => {
                self.expired = self.deadline.expired();
                false
            }
        }
    }
}

impl Sink for StreamSink<'_> {
    fn event(&mut self, e: Event) -> bool {
        let hit = match trace::hit(
            &mut self.hits,
            self.index,
            &self.g,
            &e,
            self.cover,
            &self.labels,
        ) {
            Ok(h) => h,
            Err(err) => {
                self.failed = Some(err.into());
                return false;
            }
        };
        if e.kind != Kind::Transit {
            if let Some(c) = hit.cluster_id {
                *self.clusters.entry(c).or_default() += e.amount;
            }
        }
        if self.batch.is_empty() {
            self.batch_since = Instant::now();
        }
        let event = pb::TraceEvent {
            event: Some(pb::trace_event::Event::Hit(hit)),
        };
        self.batch_bytes += event.encoded_len();
        self.batch.push(Ok(event));
        if self.batch_bytes >= BATCH_BYTES && !self.flush() {
            return false;
        }
        self.alive()
    }

    fn alive(&mut self) -> bool {
        if self.deadline.expired() {
            self.expired = true;
            return false;
        }
        if !self.batch.is_empty() && self.batch_since.elapsed() >= BATCH_WAIT && !self.flush() {
            return false;
        }
        !self.events.is_closed()
    }
}

fn summary(
    t: &Totals,
    complete: bool,
    height: u32,
    clusters: FxHashMap<u64, u64>,
    by_label: FxHashMap<(String, String), u64>,
) -> pb::TraceSummary {
    let cluster_count = clusters.len() as u64;
    let mut clusters: Vec<pb::ClusterAmount> = clusters
        .into_iter()
        .map(|(cluster_id, amount)| pb::ClusterAmount { cluster_id, amount })
        .collect();
    clusters.sort_by_key(|c| (std::cmp::Reverse(c.amount), c.cluster_id));
    clusters.truncate(SUMMARY_CLUSTERS);
    let mut labels: Vec<pb::LabelAmount> = by_label
        .into_iter()
        .map(|((label, category), amount)| pb::LabelAmount {
            label,
            category,
            amount,
        })
        .collect();
    labels.sort_by(|a, b| b.amount.cmp(&a.amount).then_with(|| a.label.cmp(&b.label)));
    pb::TraceSummary {
        complete,
        as_of_height: height,
        source_amount: t.source,
        transactions_visited: t.visited,
        unspent: t.unspent,
        stopped: t.stopped,
        beyond_hops: t.beyond_hops,
        outside_window: t.outside_window,
        below_min: t.below_min,
        mined: t.mined,
        before_start: t.before_start,
        unknown_value: t.unknown_value,
        to_fees: t.to_fees,
        rounding: t.rounding,
        unfinished: t.unfinished,
        rejoined: t.rejoined,
        clusters,
        cluster_count,
        labels,
    }
}
