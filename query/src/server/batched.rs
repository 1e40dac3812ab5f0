//! A response stream fed in batches. A trace finds hits faster than one
//! message at a time can cross to the runtime: each message sent alone
//! wakes the stream's task, which encodes it and writes to the connection
//! by itself, and those wake-ups cost the runtime's workers (the ones
//! answering everyone's summaries) more than the hits cost the trace. A
//! batch wakes the task once, and tonic encodes the messages it finds
//! ready into one write.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tokio_stream::Stream;

/// The messages of a batch, in order.
pub(super) type Batch<T> = Vec<T>;

/// The sending side: at most `capacity` batches wait for the caller.
pub(super) fn channel<T>(capacity: usize) -> (mpsc::Sender<Batch<T>>, Batched<T>) {
    let (tx, rx) = mpsc::channel(capacity);
    (
        tx,
        Batched {
            rx,
            ready: Vec::new().into_iter(),
        },
    )
}

/// The messages of the batches received, one at a time.
pub struct Batched<T> {
    rx: mpsc::Receiver<Batch<T>>,
    /// What is left of the batch being read.
    ready: std::vec::IntoIter<T>,
}

impl<T> Stream for Batched<T>
where
    T: Unpin,
{
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        loop {
            if let Some(item) = self.ready.next() {
                return Poll::Ready(Some(item));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(batch)) => self.ready = batch.into_iter(),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    use super::*;

    #[tokio::test]
    async fn messages_come_out_one_at_a_time_in_order_and_empty_batches_vanish() {
        let (tx, stream) = channel(4);
        tx.send(vec![1, 2, 3]).await.unwrap();
        tx.send(vec![]).await.unwrap();
        tx.send(vec![4]).await.unwrap();
        drop(tx);
        assert_eq!(stream.collect::<Vec<u32>>().await, vec![1, 2, 3, 4]);
    }
}
