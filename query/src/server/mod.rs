//! `satflow serve`: the index over gRPC (`satflow.v1`), with health,
//! reflection, deadlines, bounded concurrency, and optional TLS and
//! bearer token.
//!
//! Requests read the index on a bounded pool of blocking threads
//! (`satflow serve --readers`), never on the runtime's workers, so health
//! checks, refusals and the transport answer however long reads take.
//! Admission bounds the requests in flight. The server opens the index as a
//! follower of the writer: a background task catches up with what
//! `satflow index` has flushed, and takes the view lock only while the
//! store moves, so one request reads one state of the index; the flow
//! graph and label index are brought up beside the readers and swapped in
//! whole.
//! With `--metrics-listen`, a tower layer around the router counts and
//! times every call and a second listener serves Prometheus `/metrics`
//! (`metrics`).

mod addresses;
mod admission;
mod batched;
mod chain;
mod clusters;
mod limits;
mod metrics;
mod niced;
mod patterns;
mod risk;
mod shared;
mod taint;
mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use satflow_proto::v1 as pb;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

pub use addresses::MAX_BATCH;
pub use limits::MAX_REQUEST;
pub use taint::{MAX_STOP_LISTED, MAX_TRACE_TXS};

use addresses::AddressesService;
use chain::ChainService;
use clusters::ClustersService;
use niced::NicedPool;
use patterns::PatternsService;
use risk::RiskService;
use shared::{CaughtUp, Shared};
use taint::TaintService;
use watch::WatchesService;

use crate::index::Index;
use crate::inferred::AsLabels;
use crate::watch::Monitor;
use admission::Admission;

pub struct ServeOptions {
    pub db: PathBuf,
    pub listen: SocketAddr,
    /// Where raw transactions are read; default: the directory of the last index run.
    pub blocks_dir: Option<PathBuf>,
    /// Require `authorization: Bearer <token>` on every satflow and reflection call.
    pub token: Option<String>,
    pub tls: Option<TlsFiles>,
    /// How often to look for blocks the writer has flushed.
    pub follow_every: Duration,
    /// Requests reading the index at once, each on a thread of its own.
    pub readers: usize,
    /// Requests accepted and not yet answered; beyond, RESOURCE_EXHAUSTED.
    pub max_in_flight: usize,
    /// How long a request may run when its caller asks no shorter
    /// deadline; then RESOURCE_EXHAUSTED. Default `MAX_REQUEST`.
    pub max_request: Duration,
    /// RocksDB block cache, in MiB.
    pub cache_mb: usize,
    /// Taint traces running at once; beyond, RESOURCE_EXHAUSTED.
    pub max_traces: usize,
    /// The most transactions a trace (or each trace of an exposure) may
    /// ask to visit; above, RESOURCE_EXHAUSTED. Default `MAX_TRACE_TXS`.
    pub max_trace_txs: u64,
    /// Members of stop clusters listed up front; default `MAX_STOP_LISTED`.
    pub max_stop_listed: u64,
    /// Transactions one page of patterns scans at most; default
    /// `patterns::list::DEFAULT_MAX_SCAN`.
    pub max_pattern_scan: u64,
    /// Where watches and alerts are kept; None: no alerts.
    pub alerts: Option<AlertOptions>,
    /// Where Prometheus metrics are served (`GET /metrics`); None: nowhere,
    /// and none are recorded.
    pub metrics_listen: Option<SocketAddr>,
    /// Which inferred categories act as labels (stop sets, exposure,
    /// watches by category); None: none.
    pub inferred_labels: Option<AsLabels>,
}

pub struct AlertOptions {
    pub dir: PathBuf,
    /// On a new alert store: the first height to evaluate (default: the
    /// block after the tip).
    pub from: Option<u32>,
    /// Refuse to start without the store; otherwise the server runs
    /// without alerts (a second server on one index, a read-only index).
    pub required: bool,
}

pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Serves until `shutdown` completes. `ready` is told the bound address
/// (useful with port 0) once the server accepts connections.
pub async fn serve(
    opts: ServeOptions,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let index = Index::open_following(&opts.db, opts.cache_mb << 20, opts.inferred_labels)?
        .with_blocks_dir(opts.blocks_dir.clone());
    let shared = Arc::new(Shared::new(index, opts.readers)?);
    let monitor = match &opts.alerts {
        Some(a) => match Monitor::open(&a.dir, a.from) {
            Ok(m) => Ok(Arc::new(m)),
            Err(e) if !a.required => {
                tracing::warn!("alerts are off: {e:#}");
                // The cause names the store's path: for the log only.
                Err("this server keeps no alerts; its log says why".into())
            }
            Err(e) => return Err(e),
        },
        None => Err("this server keeps no alerts (it was started with --no-alerts)".into()),
    };
    let metrics = opts
        .metrics_listen
        .map(|_| Arc::new(metrics::Metrics::new(Arc::clone(&shared))));
    tokio::spawn(follow(
        Arc::clone(&shared),
        NicedPool::new("satflow-catch-up", 1)?,
        monitor.as_ref().ok().cloned(),
        metrics.clone(),
        opts.follow_every,
    ));
    // Subscriptions never end by themselves: they are told to at shutdown,
    // or the server would wait for them.
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stopping_tx.send(true);
    };

    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() && (opts.token.is_none() || opts.tls.is_none()) {
        tracing::warn!(
            "listening on {local}, beyond loopback, without both TLS and a bearer token: anyone who can reach it can read the index"
        );
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<pb::chain_server::ChainServer<ChainService>>()
        .await;
    health
        .set_serving::<pb::addresses_server::AddressesServer<AddressesService>>()
        .await;
    health
        .set_serving::<pb::clusters_server::ClustersServer<ClustersService>>()
        .await;
    health
        .set_serving::<pb::taint_server::TaintServer<TaintService>>()
        .await;
    health
        .set_serving::<pb::risk_server::RiskServer<RiskService>>()
        .await;
    health
        .set_serving::<pb::patterns_server::PatternsServer<PatternsService>>()
        .await;
    match &monitor {
        Ok(_) => {
            health
                .set_serving::<pb::watches_server::WatchesServer<WatchesService>>()
                .await
        }
        Err(_) => {
            health
                .set_not_serving::<pb::watches_server::WatchesServer<WatchesService>>()
                .await
        }
    }
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let admission = Admission::new(opts.token, opts.max_in_flight, opts.max_request);
    let slots = taint::Slots::new(opts.max_traces)?;
    let bounds = taint::TraceBounds {
        max_txs: opts.max_trace_txs,
        max_listed: opts.max_stop_listed,
    };

    let mut server = Server::builder()
        .concurrency_limit_per_connection(256)
        .max_concurrent_streams(Some(1024))
        .http2_keepalive_interval(Some(Duration::from_secs(30)));
    if let Some(tls) = &opts.tls {
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let identity = Identity::from_pem(read(&tls.cert)?, read(&tls.key)?);
        server = server
            .tls_config(ServerTlsConfig::new().identity(identity))
            .context("TLS certificate or key")?;
    }
    if let (Some(addr), Some(m)) = (opts.metrics_listen, &metrics) {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} for metrics"))?;
        let local = listener.local_addr()?;
        if !local.ip().is_loopback() {
            tracing::warn!(
                "serving metrics on {local}, beyond loopback: they carry no secrets, but anyone who can reach it sees the server's load"
            );
        }
        tracing::info!("serving Prometheus metrics on http://{local}/metrics");
        let app = axum::Router::new()
            .route("/metrics", axum::routing::get(metrics::scrape))
            .with_state(Arc::clone(m));
        let mut stop = stopping.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stop.wait_for(|&s| s).await;
            });
            if let Err(e) = served.await {
                tracing::error!("serving metrics: {e}");
            }
        });
    }
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    ready(local);
    server
        // Outermost: it sees every call, refusals of the interceptors too.
        .layer(metrics::MetricsLayer(metrics))
        // Health stays open: load balancers probe it without credentials.
        .add_service(health_service)
        .add_service(InterceptedService::new(
            reflection().build_v1()?,
            admission.clone(),
        ))
        .add_service(InterceptedService::new(
            reflection().build_v1alpha()?,
            admission.clone(),
        ))
        .add_service(pb::chain_server::ChainServer::with_interceptor(
            ChainService::new(Arc::clone(&shared)),
            admission.clone(),
        ))
        .add_service(pb::addresses_server::AddressesServer::with_interceptor(
            AddressesService::new(Arc::clone(&shared)),
            admission.clone(),
        ))
        .add_service(pb::clusters_server::ClustersServer::with_interceptor(
            ClustersService::new(Arc::clone(&shared)),
            admission.clone(),
        ))
        .add_service(pb::taint_server::TaintServer::with_interceptor(
            TaintService::new(Arc::clone(&shared), slots.clone(), bounds),
            admission.clone(),
        ))
        .add_service(pb::risk_server::RiskServer::with_interceptor(
            RiskService::new(Arc::clone(&shared), slots, bounds),
            admission.clone(),
        ))
        .add_service(pb::patterns_server::PatternsServer::with_interceptor(
            PatternsService::new(Arc::clone(&shared), opts.max_pattern_scan),
            admission.clone(),
        ))
        .add_service(pb::watches_server::WatchesServer::with_interceptor(
            WatchesService::new(shared, monitor, stopping),
            admission,
        ))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .context("serving gRPC")
}

/// Catches up with the writer every `every`, logging each new tip, and
/// has the monitor (if any) evaluate what arrived. Catch-up runs on
/// `catching_up`, a low-priority thread: rebuilding the label index after
/// an import takes seconds of CPU, which requests come before.
async fn follow(
    shared: Arc<Shared>,
    catching_up: NicedPool,
    monitor: Option<Arc<Monitor>>,
    metrics: Option<Arc<metrics::Metrics>>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_tip = None;
    let mut behind = false;
    loop {
        // A monitor with blocks left to evaluate goes on at once.
        if !behind {
            tick.tick().await;
        }
        let (s, recorded) = (Arc::clone(&shared), metrics.clone());
        let started = Instant::now();
        let catch_up = move || {
            let tip = s.catch_up()?;
            if let Some(r) = recorded {
                r.caught_up(s.index(), started.elapsed());
            }
            anyhow::Ok(tip)
        };
        match catching_up.run(catch_up).await {
            Some(Ok(CaughtUp { tip, drained })) if last_tip != Some(tip) => {
                match last_tip {
                    Some(_) => tracing::info!(
                        "the index grew: now at tip height {tip} (caught up in {} ms, of which {} ms waiting for requests still reading the handle it moved)",
                        started.elapsed().as_millis(),
                        drained.as_millis()
                    ),
                    None => tracing::debug!("serving the index at tip height {tip}"),
                }
                last_tip = Some(tip);
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => tracing::warn!("catching up with the writer: {e:#}"),
            None => tracing::warn!("catch-up panicked"),
        }
        let Some(m) = &monitor else { continue };
        let (s, m) = (Arc::clone(&shared), Arc::clone(m));
        let started = Instant::now();
        // Only this loop moves the index (catch-up), so the evaluation sees
        // one state of it without taking the view lock.
        behind = match tokio::task::spawn_blocking(move || m.update(s.index())).await {
            Ok(Ok(u)) => {
                if let Some(r) = &metrics {
                    r.alerts_evaluated(u.evaluated_blocks, started.elapsed());
                }
                if u.evaluated_blocks > 0 {
                    tracing::info!(
                        "alerts: {} block(s) evaluated, up to height {:?}, in {} ms",
                        u.evaluated_blocks,
                        u.height,
                        started.elapsed().as_millis()
                    );
                }
                if u.retracted_blocks > 0 {
                    tracing::info!(
                        "alerts: {} blocks left the best chain, their alerts retracted",
                        u.retracted_blocks
                    );
                }
                if u.behind {
                    tracing::info!("alerts: evaluated up to height {:?}, catching up", u.height);
                }
                u.behind
            }
            // Mid-reorg, or no flow graph yet: the next round retries.
            Ok(Err(e @ crate::error::QueryError::FailedPrecondition(_))) => {
                tracing::debug!("alerts: {e}");
                false
            }
            Ok(Err(e)) => {
                tracing::warn!("alerts: {e:#}");
                false
            }
            Err(e) => {
                tracing::error!("alerts: the evaluation failed: {e}");
                false
            }
        };
    }
}
