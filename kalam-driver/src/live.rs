//! Live-query streams: one bounded queue per subscription, from the driver
//! task straight to the application.
//!
//! **When a subscription's buffer is full** (its consumer is slower than
//! the changes arrive), that subscription ends: the consumer first reads
//! every event already buffered, then gets
//! [`Error::SubscriptionLagged`], then the end of the stream. The driver
//! never waits for a slow consumer, so other subscriptions on the same
//! socket are not delayed. To continue, subscribe again with
//! [`SubscriptionOptions::with_from`] set to the last `_seq` you processed.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
#[cfg(doc)]
use kalam_proto::Error;
use kalam_proto::{LiveEvent, LiveRows, LiveRowsAs, Result, SubId, SubscriptionOptions};

use crate::msg::Command;
use crate::sync::{Next, QueueRx, Sender};

/// The typed change events of one live query (from
/// [`KalamLinkClient::live_events`](crate::KalamLinkClient::live_events)).
///
/// Yields `Subscribed` (again after each reconnect), `InitialRows` pages,
/// `Ready`, then `Insert` / `Update` / `Delete` as they happen. A failed
/// subscription yields one `Err` and ends. Dropping it unsubscribes.
/// It is a [`Stream`], and also has an inherent [`next`](Self::next).
///
/// The stream keeps the client's driver running while it is alive, even
/// after every client handle is dropped.
pub struct LiveEvents {
    sub: SubId,
    source: QueueRx,
    commands: Sender<Command>,
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
    pub(crate) fn new(sub: SubId, source: QueueRx, commands: Sender<Command>) -> Self {
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

    /// The same stream with every whole row read as the application's type
    /// `T` (what [`KalamLinkClient::live_events_as`](crate::KalamLinkClient::live_events_as)
    /// returns), for a stream opened with explicit options
    /// ([`live_events_with`](crate::KalamLinkClient::live_events_with)).
    pub fn into_typed<T: serde::de::DeserializeOwned>(self) -> LiveEventsAs<T> {
        LiveEventsAs::new(self)
    }

    /// An event if one is already buffered, without waiting.
    fn try_next(&mut self) -> Option<LiveEvent> {
        self.source.try_next()
    }
}

impl Stream for LiveEvents {
    type Item = Result<LiveEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.source.poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Next::Event(e)) => Poll::Ready(Some(Ok(e))),
            Poll::Ready(Next::Error(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Next::End) => {
                self.finished = true;
                Poll::Ready(None)
            }
        }
    }
}

/// [`LiveEvents`] with rows read as the application's type `T` (from
/// [`KalamLinkClient::live_events_as`](crate::KalamLinkClient::live_events_as)):
/// see [`TypedLiveEvent`](kalam_proto::TypedLiveEvent). A row that does not
/// fit is one `Err` ([`Error::Cell`](kalam_proto::Error::Cell)); the
/// stream goes on.
pub struct LiveEventsAs<T> {
    events: LiveEvents,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for LiveEventsAs<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveEventsAs")
            .field("sub", &self.events.sub)
            .finish_non_exhaustive()
    }
}

impl<T: serde::de::DeserializeOwned> LiveEventsAs<T> {
    pub(crate) fn new(events: LiveEvents) -> Self {
        LiveEventsAs {
            events,
            _t: std::marker::PhantomData,
        }
    }

    /// The subscription's id within the client.
    pub fn id(&self) -> SubId {
        self.events.id()
    }

    /// The next event; `None` when the subscription has ended.
    pub async fn next(&mut self) -> Option<Result<kalam_proto::TypedLiveEvent<T>>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl<T: serde::de::DeserializeOwned> Stream for LiveEventsAs<T> {
    type Item = Result<kalam_proto::TypedLiveEvent<T>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.events).poll_next(cx).map(|item| {
            item.map(|event| event.and_then(|e| kalam_proto::TypedLiveEvent::from_event(e).map_err(Into::into)))
        })
    }
}

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
    m: Materialised<LiveRows>,
}

/// A live query's current result set as the application's type `T`, kept
/// up to date (from
/// [`KalamLinkClient::live_as`](crate::KalamLinkClient::live_as)); see
/// [`LiveRowsAs`] for how rows are read and what a row that does not fit
/// does.
///
/// Like [`LiveQuery`]: [`next`](Self::next) waits for a change, applies
/// every change already buffered, and returns the current rows; a row that
/// does not fit `T` is an `Err` from that call (naming the row's column),
/// and the next call goes on.
pub struct LiveQueryAs<T> {
    m: Materialised<LiveRowsAs<T>>,
}

impl<T> std::fmt::Debug for LiveQueryAs<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveQueryAs")
            .field("sub", &self.m.events.sub)
            .finish_non_exhaustive()
    }
}

/// What a materialised view does with events.
pub(crate) trait View: Default {
    fn apply_event(&mut self, event: &LiveEvent) -> Result<bool>;
    fn ready(&self) -> bool;
}

impl View for LiveRows {
    fn apply_event(&mut self, event: &LiveEvent) -> Result<bool> {
        Ok(self.apply(event))
    }

    fn ready(&self) -> bool {
        self.is_ready()
    }
}

impl<T: serde::de::DeserializeOwned> View for LiveRowsAs<T> {
    fn apply_event(&mut self, event: &LiveEvent) -> Result<bool> {
        Ok(self.apply(event)?)
    }

    fn ready(&self) -> bool {
        self.is_ready()
    }
}

/// A subscription and the rows it keeps.
#[derive(Debug)]
struct Materialised<V> {
    events: LiveEvents,
    rows: V,
    resubscribe: Resubscribe,
}

impl<V: View> Materialised<V> {
    async fn resync(&mut self) -> Result<&V> {
        let r = &self.resubscribe;
        let mut options = r.options.clone();
        options.from = None;
        let mut events = crate::client::subscribe(&r.commands, r.buffer, &r.sql, Some(options)).await?;
        let mut rows = V::default();
        while !rows.ready() {
            match events.next().await {
                Some(Ok(event)) => {
                    rows.apply_event(&event)?;
                }
                Some(Err(e)) => return Err(e),
                None => return Err(kalam_proto::Error::Closed),
            }
        }
        self.events = events; // the old one unsubscribes as it drops
        self.rows = rows;
        Ok(&self.rows)
    }

    async fn next(&mut self) -> Option<Result<&V>> {
        loop {
            let event = match self.events.next().await? {
                Ok(e) => e,
                Err(e) => return Some(Err(e)),
            };
            let mut failed = None;
            let mut changed = false;
            let mut apply = |rows: &mut V, event: &LiveEvent| match rows.apply_event(event) {
                Ok(c) => changed |= c,
                Err(e) => {
                    changed = true;
                    failed.get_or_insert(e);
                }
            };
            apply(&mut self.rows, &event);
            while let Some(event) = self.events.try_next() {
                apply(&mut self.rows, &event);
            }
            if let Some(e) = failed {
                return Some(Err(e));
            }
            if changed && self.rows.ready() {
                return Some(Ok(&self.rows));
            }
        }
    }
}

/// What a [`LiveQuery`] needs to subscribe again.
pub(crate) struct Resubscribe {
    pub(crate) commands: Sender<Command>,
    pub(crate) buffer: usize,
    pub(crate) sql: String,
    pub(crate) options: SubscriptionOptions,
}

impl std::fmt::Debug for Resubscribe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resubscribe")
            .field("sql", &self.sql)
            .finish_non_exhaustive()
    }
}

impl LiveQuery {
    pub(crate) fn new(events: LiveEvents, resubscribe: Resubscribe) -> Self {
        LiveQuery {
            m: Materialised {
                events,
                rows: LiveRows::new(),
                resubscribe,
            },
        }
    }

    /// Reads the whole result set again and makes it the current rows:
    /// subscribes anew with initial data, takes every page, then lets the
    /// old subscription go. Rows the server never notified (it drops change
    /// notifications under a burst, silently: PROTOCOL §10.2, README
    /// "Live queries") are there afterwards, and rows deleted meanwhile are
    /// gone. Changes that arrive while it reads are applied in order.
    ///
    /// A failed resync (`Err`) leaves the current rows and subscription as
    /// they were.
    pub async fn resync(&mut self) -> Result<&LiveRows> {
        self.m.resync().await
    }

    /// The current rows, after the next change; `None` when the
    /// subscription has ended, `Err` once if it failed.
    pub async fn next(&mut self) -> Option<Result<&LiveRows>> {
        self.m.next().await
    }

    /// The current rows, as of the last [`next`](Self::next).
    pub fn rows(&self) -> &LiveRows {
        &self.m.rows
    }

    /// The subscription's id within the client.
    pub fn id(&self) -> SubId {
        self.m.events.id()
    }
}

impl<T: serde::de::DeserializeOwned> LiveQueryAs<T> {
    pub(crate) fn new(events: LiveEvents, resubscribe: Resubscribe) -> Self {
        LiveQueryAs {
            m: Materialised {
                events,
                rows: LiveRowsAs::new(),
                resubscribe,
            },
        }
    }

    /// Reads the whole result set again, as [`LiveQuery::resync`] does. A
    /// row that does not fit `T` fails the resync, which then leaves the
    /// current rows and subscription as they were.
    pub async fn resync(&mut self) -> Result<&LiveRowsAs<T>> {
        self.m.resync().await
    }

    /// The current rows, after the next change; `None` when the
    /// subscription has ended; `Err` for a row that does not fit `T` (the
    /// next call goes on), or once if the subscription failed.
    pub async fn next(&mut self) -> Option<Result<&LiveRowsAs<T>>> {
        self.m.next().await
    }

    /// The current rows, as of the last [`next`](Self::next).
    pub fn rows(&self) -> &LiveRowsAs<T> {
        &self.m.rows
    }

    /// The subscription's id within the client.
    pub fn id(&self) -> SubId {
        self.m.events.id()
    }
}
