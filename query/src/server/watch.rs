//! `satflow.v1.Watches`: watch lists and the alert stream. A subscriber
//! reads the alert store from the id it asked for and then waits for the
//! newest id to move, so replay and live alerts are one loop, and a slow
//! subscriber only falls behind in the store, never in memory.

use std::sync::Arc;

use rustc_hash::FxHashSet;
use satflow_proto::v1 as pb;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::limits::Deadline;
use super::shared::Shared;
use super::taint::STALLED;
use crate::args::invalid;
use crate::error::QueryError;
use crate::watch::Monitor;

/// Subscribers at once; beyond, RESOURCE_EXHAUSTED.
const MAX_SUBSCRIBERS: usize = 256;
/// Alerts read from the store at a time.
const BATCH: usize = 256;

pub struct WatchesService {
    shared: Arc<Shared>,
    /// Why not, when the server runs without alerts.
    monitor: Result<Arc<Monitor>, String>,
    subscribers: Arc<Semaphore>,
    /// Turns true when the server shuts down.
    stopping: watch::Receiver<bool>,
}

impl WatchesService {
    pub fn new(
        shared: Arc<Shared>,
        monitor: Result<Arc<Monitor>, String>,
        stopping: watch::Receiver<bool>,
    ) -> WatchesService {
        WatchesService {
            shared,
            monitor,
            subscribers: Arc::new(Semaphore::new(MAX_SUBSCRIBERS)),
            stopping,
        }
    }

    fn monitor(&self) -> Result<&Arc<Monitor>, Status> {
        self.monitor
            .as_ref()
            .map_err(|why| Status::failed_precondition(why.clone()))
    }
}

type Alerts = mpsc::Sender<Result<pb::Alert, Status>>;

#[tonic::async_trait]
impl pb::watches_server::Watches for WatchesService {
    async fn put_watch(&self, request: Request<pb::Watch>) -> Result<Response<pb::Watch>, Status> {
        let monitor = Arc::clone(self.monitor()?);
        let w = request.get_ref().clone();
        self.shared
            .answer(&request, move |index, _| monitor.put_watch(index, w))
            .await
    }

    // The store's reads and writes (an fsynced write, up to 10,000
    // watches) go to a reader like every other read, off the runtime's
    // threads.
    async fn delete_watch(
        &self,
        request: Request<pb::DeleteWatchRequest>,
    ) -> Result<Response<pb::DeleteWatchResponse>, Status> {
        let monitor = Arc::clone(self.monitor()?);
        let name = request.get_ref().name.clone();
        self.shared
            .answer(&request, move |_, _| {
                match monitor.store().delete_watch(&name) {
                    Ok(true) => Ok(pb::DeleteWatchResponse {}),
                    Ok(false) => Err(QueryError::NotFound(format!("name: no watch {name:?}"))),
                    Err(e) => Err(QueryError::Internal(e)),
                }
            })
            .await
    }

    async fn list_watches(
        &self,
        request: Request<pb::ListWatchesRequest>,
    ) -> Result<Response<pb::ListWatchesResponse>, Status> {
        let monitor = Arc::clone(self.monitor()?);
        self.shared
            .answer(&request, move |_, _| {
                let store = monitor.store();
                let listing = || -> anyhow::Result<pb::ListWatchesResponse> {
                    Ok(pb::ListWatchesResponse {
                        watches: store.watches()?,
                        newest_alert_id: store.newest_id()?,
                        // Before its first block, the monitor is "done" up
                        // to where it starts.
                        evaluated_height: match store.last_block()? {
                            Some((h, _, _)) => h,
                            None => store.from_height()?.unwrap_or(0).saturating_sub(1),
                        },
                    })
                };
                listing().map_err(QueryError::Internal)
            })
            .await
    }

    type SubscribeStream = ReceiverStream<Result<pb::Alert, Status>>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let monitor = Arc::clone(self.monitor()?);
        let deadline = Deadline::of(&request);
        let r = request.into_inner();
        let mut newest = monitor.newest();
        let known = *newest.borrow_and_update();
        if r.after_id > known {
            return Err(invalid(
                "after_id",
                format!("{} is past the newest alert, {known}", r.after_id),
            )
            .into());
        }
        let seat = Arc::clone(&self.subscribers)
            .try_acquire_owned()
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "{MAX_SUBSCRIBERS} subscribers are connected, the most this server takes"
                ))
            })?;
        let only: FxHashSet<String> = r.watches.into_iter().collect();
        let (tx, rx) = mpsc::channel(BATCH);
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            let _seat = seat;
            // A subscription stays open until its caller's deadline, if
            // any: the server's limit is for work, and it waits.
            let until = deadline.client();
            let sleep = async {
                match until {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stream(&monitor, r.after_id, &only, &mut newest, &tx) => {}
                _ = sleep => {
                    let ended = tx.send(Err(super::limits::deadline_exceeded()));
                    let _ = tokio::time::timeout(STALLED, ended).await;
                }
                _ = async { stopping.wait_for(|s| *s).await.is_ok() } => {
                    let _ = tx.try_send(Err(Status::unavailable("the server is shutting down")));
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Sends every alert after `after` (of the watches in `only`, if any),
/// then each new one, until the subscriber leaves or stalls.
async fn stream(
    monitor: &Monitor,
    mut after: u64,
    only: &FxHashSet<String>,
    newest: &mut watch::Receiver<u64>,
    tx: &Alerts,
) {
    loop {
        // Marked seen before reading: an alert stored after this read
        // moves `newest` again and wakes the wait below.
        newest.borrow_and_update();
        let batch = match monitor.store().alerts_after(after, BATCH) {
            Ok(b) => b,
            Err(e) => {
                let _ = tx.send(Err(QueryError::Internal(e).into())).await;
                return;
            }
        };
        if batch.is_empty() {
            tokio::select! {
                changed = newest.changed() => if changed.is_err() { return },
                _ = tx.closed() => return,
            }
            continue;
        }
        for a in batch {
            after = a.id;
            let name = a.watch.as_ref().map_or("", |w| w.name.as_str());
            if !only.is_empty() && !only.contains(name) {
                continue;
            }
            match tokio::time::timeout(STALLED, tx.send(Ok(a))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::warn!("a subscriber stopped reading for {STALLED:?}: dropped");
                    return;
                }
            }
        }
        // A subscriber whose watches the replayed alerts skip would read
        // the whole history without waiting once: let the runtime's other
        // tasks (and this one's deadline) run between batches.
        tokio::task::yield_now().await;
    }
}
