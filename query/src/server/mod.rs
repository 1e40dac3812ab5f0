//! `satflow serve`: the index over gRPC (`satflow.v1`), with health,
//! reflection, deadlines, bounded concurrency, and optional TLS and
//! bearer token.
//!
//! Requests read the index right on the runtime's worker threads (as many
//! as `satflow serve --readers`): a read that waits on the disk holds one
//! worker, and handing each request to a blocking thread instead cost ~20%
//! of the throughput (measured with `benches/serve_load.rs`). Admission
//! bounds the requests in flight. The server opens the index as a follower
//! of the writer:
//! a background task catches up with what `satflow index` has flushed, and
//! takes the view lock for it, so one request reads one state of the index.

mod addresses;
mod admission;
mod chain;
mod clusters;
mod limits;
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
use satflow_indexer::Access;
use satflow_proto::v1 as pb;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

pub use addresses::MAX_BATCH;

use addresses::AddressesService;
use chain::ChainService;
use clusters::ClustersService;
use risk::RiskService;
use shared::Shared;
use taint::TaintService;
use watch::WatchesService;

use crate::index::Index;
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
    /// Requests accepted and not yet answered; beyond, RESOURCE_EXHAUSTED.
    pub max_in_flight: usize,
    /// RocksDB block cache, in MiB.
    pub cache_mb: usize,
    /// Taint traces running at once; beyond, RESOURCE_EXHAUSTED.
    pub max_traces: usize,
    /// Where watches and alerts are kept; None: no alerts.
    pub alerts: Option<AlertOptions>,
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
    let index = Index::open_with_cache(&opts.db, Access::Follow, opts.cache_mb << 20)?
        .with_blocks_dir(opts.blocks_dir.clone());
    let shared = Arc::new(Shared::new(index));
    let monitor = match &opts.alerts {
        Some(a) => match Monitor::open(&a.dir, a.from) {
            Ok(m) => Ok(Arc::new(m)),
            Err(e) if !a.required => {
                tracing::warn!("alerts are off: {e:#}");
                Err(format!("this server keeps no alerts: {e:#}"))
            }
            Err(e) => return Err(e),
        },
        None => Err("this server keeps no alerts (it was started with --no-alerts)".into()),
    };
    tokio::spawn(follow(
        Arc::clone(&shared),
        monitor.as_ref().ok().cloned(),
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
    let admission = Admission::new(opts.token, opts.max_in_flight);
    let slots = taint::Slots::new(opts.max_traces);

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
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    ready(local);
    server
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
            TaintService::new(Arc::clone(&shared), slots.clone()),
            admission.clone(),
        ))
        .add_service(pb::risk_server::RiskServer::with_interceptor(
            RiskService::new(Arc::clone(&shared), slots),
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
/// has the monitor (if any) evaluate what arrived.
async fn follow(shared: Arc<Shared>, monitor: Option<Arc<Monitor>>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_tip = None;
    let mut behind = false;
    loop {
        // A monitor with blocks left to evaluate goes on at once.
        if !behind {
            tick.tick().await;
        }
        let s = Arc::clone(&shared);
        let started = Instant::now();
        match tokio::task::spawn_blocking(move || s.catch_up()).await {
            Ok(Ok(tip)) if last_tip != Some(tip) => {
                match last_tip {
                    Some(_) => tracing::info!(
                        "the index grew: now at tip height {tip} (caught up in {} ms)",
                        started.elapsed().as_millis()
                    ),
                    None => tracing::debug!("serving the index at tip height {tip}"),
                }
                last_tip = Some(tip);
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("catching up with the writer: {e:#}"),
            Err(e) => tracing::warn!("catch-up task failed: {e}"),
        }
        let Some(m) = &monitor else { continue };
        let (s, m) = (Arc::clone(&shared), Arc::clone(m));
        let started = Instant::now();
        // Only this loop moves the index (catch-up), so the evaluation sees
        // one state of it without taking the view lock.
        behind = match tokio::task::spawn_blocking(move || m.update(&s.index)).await {
            Ok(Ok(u)) => {
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
