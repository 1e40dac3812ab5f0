//! Prometheus metrics of `satflow serve --metrics-listen`: every gRPC call
//! counted by method and status code and timed, the tip served and its
//! age, catch-up and alert evaluation, and the RocksDB block cache, encoded
//! by `prometheus-client` (OpenMetrics text) on `GET /metrics`.
//!
//! Calls are counted by a tower layer around the whole router, so refusals
//! of the admission interceptor (UNAUTHENTICATED, RESOURCE_EXHAUSTED,
//! DEADLINE_EXCEEDED) count too. A call's status is read from the response
//! headers when it is there (a "trailers-only" answer: an error, or a
//! refusal), else from the trailers as they pass through the response body.
//! A unary call is timed until its trailers (the whole answer sent); a
//! streaming one (Subscribe, Trace, health Watch, reflection) until its
//! response headers, as a stream may last for hours.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::IntoResponse;
use http::header::CONTENT_TYPE;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use prost::Message;
use satflow_proto::v1 as pb;
use tonic::Code;

use super::shared::Shared;
use crate::chain;
use crate::index::Index;

/// The registry and the metrics the server records.
pub struct Metrics {
    registry: Registry,
    /// Every method the server has, by path, and whether it streams its
    /// answer: a path outside them counts as `other`, so a client cannot
    /// add series at will.
    methods: HashMap<Arc<str>, bool>,
    other: Arc<str>,
    calls: Family<CallLabels, Counter>,
    latency: Family<MethodLabel, Histogram>,
    tip_height: Gauge,
    lag_blocks: Gauge,
    /// The tip block's header time (Unix seconds), for its age at scrape.
    tip_time: Gauge,
    catch_up: Histogram,
    alert_evaluation: Histogram,
    alert_blocks: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: Arc<str>,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: Arc<str>,
}

/// From 100 µs to 10 s, three buckets a decade (1, 2.5, 5).
const CALL_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

impl Metrics {
    pub fn new(shared: Arc<Shared>) -> Metrics {
        let mut registry = Registry::default();
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "satflow_grpc_requests",
            "gRPC calls answered, by method (path) and status code (`none`: the answer ended without a grpc-status)",
            calls.clone(),
        );
        let latency =
            Family::<MethodLabel, Histogram>::new_with_constructor(|| Histogram::new(CALL_BUCKETS));
        registry.register_with_unit(
            "satflow_grpc_request_duration",
            "Time from a call's arrival to the end of its answer (unary) or to its response headers (streaming)",
            Unit::Seconds,
            latency.clone(),
        );
        let tip_height = Gauge::default();
        registry.register(
            "satflow_index_tip_height",
            "Height of the tip the server answers from (as of its last catch-up)",
            tip_height.clone(),
        );
        let lag_blocks = Gauge::default();
        registry.register(
            "satflow_index_lag_blocks",
            "Blocks between the tip and the best header `satflow index` found in the blocks directory at its last scan",
            lag_blocks.clone(),
        );
        let tip_time = Gauge::default();
        registry.register_with_unit(
            "satflow_index_tip_timestamp",
            "Header time of the tip block (Unix time)",
            Unit::Seconds,
            tip_time.clone(),
        );
        // Up to about a minute: catch-up takes milliseconds, an
        // evaluation of many blocks after a long stop takes longer.
        let slow = || Histogram::new(exponential_buckets(0.001, 2.0, 17));
        let catch_up = slow();
        registry.register_with_unit(
            "satflow_catch_up_duration",
            "Time of each round catching up with what `satflow index` has flushed",
            Unit::Seconds,
            catch_up.clone(),
        );
        let alert_evaluation = slow();
        registry.register_with_unit(
            "satflow_alert_evaluation_duration",
            "Time of each round of alert evaluation that evaluated at least one block",
            Unit::Seconds,
            alert_evaluation.clone(),
        );
        let alert_blocks = Counter::default();
        registry.register(
            "satflow_alert_blocks_evaluated",
            "Blocks the watches were evaluated against",
            alert_blocks.clone(),
        );
        registry.register_collector(Box::new(AtScrape {
            shared: Arc::clone(&shared),
            tip_time: tip_time.clone(),
        }));
        let metrics = Metrics {
            registry,
            methods: known_methods(),
            other: "other".into(),
            calls,
            latency,
            tip_height,
            lag_blocks,
            tip_time,
            catch_up,
            alert_evaluation,
            alert_blocks,
        };
        metrics.set_tip(shared.index());
        metrics
    }

    /// A catch-up round took `took`; the index is now as `index` is.
    pub fn caught_up(&self, index: &Index, took: Duration) {
        self.catch_up.observe(took.as_secs_f64());
        self.set_tip(index);
    }

    fn set_tip(&self, index: &Index) {
        match index.tip() {
            Ok((height, row)) => {
                self.tip_height.set(i64::from(height.0));
                self.tip_time.set(i64::from(row.header.time));
                match chain::behind(index, height) {
                    Ok((_, blocks)) => {
                        self.lag_blocks.set(i64::from(blocks));
                    }
                    Err(e) => tracing::debug!("metrics: the best header: {e}"),
                }
            }
            Err(e) => tracing::debug!("metrics: the tip: {e}"),
        }
    }

    /// An alert evaluation round evaluated `blocks` blocks in `took`.
    pub fn alerts_evaluated(&self, blocks: u32, took: Duration) {
        if blocks > 0 {
            self.alert_evaluation.observe(took.as_secs_f64());
            self.alert_blocks.inc_by(u64::from(blocks));
        }
    }

    /// The exposition, as of now.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// The label of the method at `path`, and whether it streams.
    fn method(&self, path: &str) -> (Arc<str>, bool) {
        match self.methods.get_key_value(path) {
            Some((name, &streaming)) => (Arc::clone(name), streaming),
            None => (Arc::clone(&self.other), false),
        }
    }
}

/// `/package.Service/Method` of every method the server has, and whether
/// it streams its answer, read from the descriptors the server registers.
fn known_methods() -> HashMap<Arc<str>, bool> {
    let mut methods = HashMap::new();
    for set in [
        pb::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ] {
        let set = prost_types::FileDescriptorSet::decode(set).expect("a valid descriptor set");
        for file in &set.file {
            for service in &file.service {
                for m in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), m.name());
                    methods.insert(path.into(), m.server_streaming());
                }
            }
        }
    }
    // tonic-reflection keeps its descriptors to itself: both versions'
    // one method, a bidirectional stream.
    for v in ["v1", "v1alpha"] {
        let path = format!("/grpc.reflection.{v}.ServerReflection/ServerReflectionInfo");
        methods.insert(path.into(), true);
    }
    methods
}

/// What is read only when scraped: the tip's age and RocksDB's counters.
struct AtScrape {
    shared: Arc<Shared>,
    tip_time: Gauge,
}

impl fmt::Debug for AtScrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AtScrape").finish_non_exhaustive()
    }
}

impl Collector for AtScrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let age = ConstGauge::new(now - self.tip_time.get());
        age.encode(encoder.encode_descriptor(
            "satflow_index_tip_age_seconds",
            "Seconds since the tip block's header time: how far the index is behind the chain, while blocks keep coming.",
            None,
            age.metric_type(),
        )?)?;
        if let Some((hits, misses)) = self.shared.block_cache_counts() {
            for (name, help, n) in [
                (
                    "satflow_rocksdb_block_cache_hits",
                    "Index blocks found in RocksDB's block cache.",
                    hits,
                ),
                (
                    "satflow_rocksdb_block_cache_misses",
                    "Index blocks RocksDB had to read (and decompress) for want of them in its block cache.",
                    misses,
                ),
            ] {
                let c = ConstCounter::new(n);
                c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
            }
        }
        // A scrape that cannot read them leaves them out, like the counts.
        if let Ok(memory) = self.shared.rocks_memory() {
            for (name, help, n) in [
                (
                    "satflow_rocksdb_table_readers_bytes",
                    "Memory the open table files of both index handles hold outside the block cache.",
                    memory.table_readers,
                ),
                (
                    "satflow_rocksdb_block_cache_bytes",
                    "Bytes in RocksDB's block cache: data, index and filter blocks.",
                    memory.block_cache,
                ),
                (
                    "satflow_rocksdb_block_cache_pinned_bytes",
                    "Bytes pinned in the block cache: each open table file's top-level index and filter partitions, and blocks being read.",
                    memory.block_cache_pinned,
                ),
            ] {
                let g = ConstGauge::new(n as i64);
                g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
            }
        }
        Ok(())
    }
}

/// `GET /metrics`.
pub async fn scrape(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

/// The canonical name of a gRPC status code, as gRPC's documentation and
/// other servers' metrics spell it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The `grpc-status` among `headers` (or trailers), if any.
fn status_in(headers: &HeaderMap) -> Option<&'static str> {
    headers
        .get("grpc-status")
        .map(|v| code_name(Code::from_bytes(v.as_bytes())))
}

/// Counts and times every call of the service it wraps (when it has
/// metrics to record them in).
#[derive(Clone)]
pub struct MetricsLayer(pub Option<Arc<Metrics>>);

impl<S> tower_layer::Layer<S> for MetricsLayer {
    type Service = Recorded<S>;

    fn layer(&self, inner: S) -> Recorded<S> {
        Recorded {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Recorded<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
}

impl<S, Req, B> tower_service::Service<http::Request<Req>> for Recorded<S>
where
    S: tower_service::Service<http::Request<Req>, Response = http::Response<B>>,
    B: Body,
{
    type Response = http::Response<RecordedBody<B>>;
    type Error = S::Error;
    type Future = RecordedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Req>) -> Self::Future {
        let call = self.metrics.as_ref().map(|m| {
            let (method, streaming) = m.method(request.uri().path());
            Call {
                metrics: Arc::clone(m),
                method,
                streaming,
                started: Instant::now(),
            }
        });
        RecordedFuture {
            inner: self.inner.call(request),
            call,
        }
    }
}

/// A call whose status is not known yet.
struct Call {
    metrics: Arc<Metrics>,
    method: Arc<str>,
    streaming: bool,
    started: Instant,
}

impl Call {
    fn observe_latency(&self) {
        self.metrics
            .latency
            .get_or_create(&MethodLabel {
                method: Arc::clone(&self.method),
            })
            .observe(self.started.elapsed().as_secs_f64());
    }

    /// The response headers are out (streaming calls are timed to here).
    fn headers_sent(&self) {
        if self.streaming {
            self.observe_latency();
        }
    }

    /// The call ended with `code` (unary calls are timed to here).
    fn ended(self, code: &'static str) {
        if !self.streaming {
            self.observe_latency();
        }
        self.metrics
            .calls
            .get_or_create(&CallLabels {
                method: self.method,
                code,
            })
            .inc();
    }
}

/// Ended before its status, or aborted: the client went away (a reset
/// stream, a closed connection), which gRPC servers count as CANCELLED.
const GONE: &str = "CANCELLED";
/// Ended without a grpc-status: not a gRPC answer.
const NO_STATUS: &str = "none";

pin_project! {
    pub struct RecordedFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }

    impl<F> PinnedDrop for RecordedFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.ended(GONE);
            }
        }
    }
}

impl<F, B, E> Future for RecordedFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Body,
{
    type Output = Result<http::Response<RecordedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let mut call = this.call.take();
        Poll::Ready(match result {
            Ok(response) => {
                if let Some(c) = &call {
                    c.headers_sent();
                }
                // A trailers-only answer: the status is in the headers. A
                // body at its end already would never be polled.
                let code = match status_in(response.headers()) {
                    None if response.body().is_end_stream() => Some(NO_STATUS),
                    code => code,
                };
                if let Some(code) = code {
                    if let Some(c) = call.take() {
                        c.ended(code);
                    }
                }
                Ok(response.map(|inner| RecordedBody { inner, call }))
            }
            Err(e) => {
                if let Some(c) = call {
                    c.ended(NO_STATUS);
                }
                Err(e)
            }
        })
    }
}

pin_project! {
    /// A response body that records its call's status as its trailers
    /// pass, or as it ends without them.
    pub struct RecordedBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }

    impl<B> PinnedDrop for RecordedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before its end (`poll_frame` sees the end): the
            // client went away.
            if let Some(call) = this.project().call.take() {
                call.ended(GONE);
            }
        }
    }
}

impl<B: Body> Body for RecordedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        let code = match &frame {
            Some(Ok(f)) => match f.trailers_ref() {
                Some(trailers) => Some(status_in(trailers).unwrap_or(NO_STATUS)),
                // The last frame, and no trailers: nothing polls again.
                None if this.inner.is_end_stream() => Some(NO_STATUS),
                None => None,
            },
            // tonic's way to end a stream its client reset.
            Some(Err(_)) => Some(GONE),
            None => Some(NO_STATUS),
        };
        if let Some(code) = code {
            if let Some(call) = this.call.take() {
                call.ended(code);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_method_is_known_and_streams_are_told_apart() {
        let methods = known_methods();
        assert_eq!(
            methods.get("/satflow.v1.Addresses/GetAddressSummary"),
            Some(&false)
        );
        assert_eq!(methods.get("/satflow.v1.Watches/Subscribe"), Some(&true));
        assert_eq!(methods.get("/satflow.v1.Taint/Trace"), Some(&true));
        assert_eq!(methods.get("/grpc.health.v1.Health/Check"), Some(&false));
        assert_eq!(methods.get("/grpc.health.v1.Health/Watch"), Some(&true));
        assert!(!methods.contains_key("/satflow.v1.Addresses/Nothing"));
    }

    #[test]
    fn status_codes_by_their_grpc_names() {
        let mut h = HeaderMap::new();
        assert_eq!(status_in(&h), None);
        h.insert("grpc-status", "5".parse().unwrap());
        assert_eq!(status_in(&h), Some("NOT_FOUND"));
        h.insert("grpc-status", "16".parse().unwrap());
        assert_eq!(status_in(&h), Some("UNAUTHENTICATED"));
    }
}
