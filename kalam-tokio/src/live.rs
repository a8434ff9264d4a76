//! Live-query streams: one bounded channel per subscription, from the
//! driver task straight to the application.
//!
//! **When a subscription's buffer is full** (its consumer is slower than
//! the changes arrive), that subscription ends: the consumer first reads
//! every event already buffered, then gets
//! [`Error::SubscriptionLagged`], then the end of the stream. The driver
//! never waits for a slow consumer, so other subscriptions on the same
//! socket are not delayed. To continue, subscribe again with
//! [`SubscriptionOptions::with_from`] set to the last `_seq` you processed.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_core::Stream;
#[cfg(doc)]
use kalam_proto::SubscriptionOptions;
use kalam_proto::{Error, LiveEvent, LiveRows, Result, SubId};
use tokio::sync::{mpsc, oneshot};

use crate::driver::Command;

/// The driver's end of a subscription.
pub(crate) struct SubscriberSink {
    events: mpsc::Sender<LiveEvent>,
    end: oneshot::Sender<Error>,
    capacity: usize,
}

/// The application's end, before it is wrapped in a stream.
pub(crate) struct SubscriberSource {
    events: mpsc::Receiver<LiveEvent>,
    end: oneshot::Receiver<Error>,
}

pub(crate) fn channel(capacity: usize) -> (SubscriberSink, SubscriberSource) {
    let capacity = capacity.max(1);
    let (events_tx, events_rx) = mpsc::channel(capacity);
    let (end_tx, end_rx) = oneshot::channel();
    (
        SubscriberSink {
            events: events_tx,
            end: end_tx,
            capacity,
        },
        SubscriberSource {
            events: events_rx,
            end: end_rx,
        },
    )
}

impl SubscriberSink {
    /// Hands an event over without waiting. `Err` when the buffer is full.
    pub(crate) fn deliver(&self, event: LiveEvent) -> std::result::Result<(), Error> {
        match self.events.try_send(event) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(Error::SubscriptionLagged {
                capacity: self.capacity,
            }),
            // The application dropped the stream; its unsubscribe is on the way.
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
        }
    }

    /// Ends the stream, with a final error or cleanly.
    pub(crate) fn finish(self, error: Option<Error>) {
        if let Some(e) = error {
            let _ = self.end.send(e);
        }
    }
}

/// The typed change events of one live query (from
/// [`KalamLinkClient::live_events`](crate::KalamLinkClient::live_events)).
///
/// Yields `Subscribed` (again after each reconnect), `InitialRows` pages,
/// `Ready`, then `Insert` / `Update` / `Delete` as they happen. A failed
/// subscription yields one `Err` and ends. Dropping it unsubscribes.
/// It is a [`Stream`], and also has an inherent [`next`](Self::next).
pub struct LiveEvents {
    sub: SubId,
    source: SubscriberSource,
    commands: mpsc::UnboundedSender<Command>,
    finished: bool,
}

impl std::fmt::Debug for LiveEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveEvents")
            .field("sub", &self.sub)
            .finish_non_exhaustive()
    }
}

impl LiveEvents {
    pub(crate) fn new(sub: SubId, source: SubscriberSource, commands: mpsc::UnboundedSender<Command>) -> Self {
        LiveEvents {
            sub,
            source,
            commands,
            finished: false,
        }
    }

    /// The subscription's id within the client.
    pub fn id(&self) -> SubId {
        self.sub
    }

    /// The next event; `None` when the subscription has ended.
    pub async fn next(&mut self) -> Option<Result<LiveEvent>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// An event if one is already buffered, without waiting.
    fn try_next(&mut self) -> Option<LiveEvent> {
        self.source.events.try_recv().ok()
    }
}

impl Stream for LiveEvents {
    type Item = Result<LiveEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if let Some(event) = ready!(self.source.events.poll_recv(cx)) {
            return Poll::Ready(Some(Ok(event)));
        }
        // The driver closed the channel: a final error, or a clean end.
        let end = ready!(Pin::new(&mut self.source.end).poll(cx));
        self.finished = true;
        Poll::Ready(end.ok().map(Err))
    }
}

use std::future::Future as _;

impl Drop for LiveEvents {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Unsubscribe(self.sub));
    }
}

/// A live query's current result set, kept up to date (from
/// [`KalamLinkClient::live`](crate::KalamLinkClient::live)).
///
/// [`next`](Self::next) waits for a change, applies every change already
/// buffered, and returns the current rows. The first call returns once the
/// initial data is complete. Rows are kept in a map keyed by primary key, so
/// a change costs a map operation, never a copy of the set.
#[derive(Debug)]
pub struct LiveQuery {
    events: LiveEvents,
    rows: LiveRows,
}

impl LiveQuery {
    pub(crate) fn new(events: LiveEvents) -> Self {
        LiveQuery {
            events,
            rows: LiveRows::new(),
        }
    }

    /// The current rows, after the next change; `None` when the
    /// subscription has ended, `Err` once if it failed.
    pub async fn next(&mut self) -> Option<Result<&LiveRows>> {
        loop {
            let event = match self.events.next().await? {
                Ok(e) => e,
                Err(e) => return Some(Err(e)),
            };
            let mut changed = self.rows.apply(&event);
            while let Some(event) = self.events.try_next() {
                changed |= self.rows.apply(&event);
            }
            if changed && self.rows.is_ready() {
                return Some(Ok(&self.rows));
            }
        }
    }

    /// The current rows, as of the last [`next`](Self::next).
    pub fn rows(&self) -> &LiveRows {
        &self.rows
    }

    /// The subscription's id within the client.
    pub fn id(&self) -> SubId {
        self.events.id()
    }
}
