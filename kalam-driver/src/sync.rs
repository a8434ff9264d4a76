//! Runtime-neutral plumbing between the handles and the driver task: a
//! reply slot, an unbounded channel, and a bounded subscriber queue. Each is
//! a `std` `Mutex` around plain data plus a `Waker`; no lock is held across
//! an `.await`, and they work on any executor.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use kalam_proto::{Error, LiveEvent};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind
    // (no invariant spans two fields), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn park(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

// ------------------------------------------------------------------ reply slot

struct SlotState<T> {
    value: Option<T>,
    sender_gone: bool,
    waker: Option<Waker>,
}

/// The sending half of a one-shot reply.
pub(crate) struct ReplyTx<T>(Arc<Mutex<SlotState<T>>>);

/// The receiving half: a future of the value, or [`Error::Closed`] if the
/// sender was dropped without answering.
pub(crate) struct ReplyRx<T>(Arc<Mutex<SlotState<T>>>);

pub(crate) fn reply<T>() -> (ReplyTx<T>, ReplyRx<T>) {
    let state = Arc::new(Mutex::new(SlotState {
        value: None,
        sender_gone: false,
        waker: None,
    }));
    (ReplyTx(state.clone()), ReplyRx(state))
}

impl<T> ReplyTx<T> {
    pub(crate) fn send(self, value: T) {
        let waker = {
            let mut s = lock(&self.0);
            s.value = Some(value);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        // `Drop` runs next and finds the value in place.
    }
}

impl<T> Drop for ReplyTx<T> {
    fn drop(&mut self) {
        let waker = {
            let mut s = lock(&self.0);
            s.sender_gone = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> std::fmt::Debug for ReplyTx<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplyTx")
    }
}

impl<T> ReplyRx<T> {
    /// The value, if it has arrived (for a caller giving up on it).
    pub(crate) fn try_take(&self) -> Option<T> {
        lock(&self.0).value.take()
    }
}

impl<T> Future for ReplyRx<T> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = lock(&self.0);
        if let Some(v) = s.value.take() {
            return Poll::Ready(Ok(v));
        }
        if s.sender_gone {
            return Poll::Ready(Err(Error::Closed));
        }
        park(&mut s.waker, cx);
        Poll::Pending
    }
}

// ------------------------------------------------------------------- channel

struct ChanState<T> {
    items: VecDeque<T>,
    senders: usize,
    receiver_gone: bool,
    waker: Option<Waker>,
}

/// The sending half of an unbounded channel. Cloning adds a sender; the
/// receiver sees the end when the last one is dropped.
pub(crate) struct Sender<T>(Arc<Mutex<ChanState<T>>>);

/// The receiving half.
pub(crate) struct Receiver<T>(Arc<Mutex<ChanState<T>>>);

pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let state = Arc::new(Mutex::new(ChanState {
        items: VecDeque::new(),
        senders: 1,
        receiver_gone: false,
        waker: None,
    }));
    (Sender(state.clone()), Receiver(state))
}

impl<T> Sender<T> {
    /// Queues `item`; `Err` (with the item) when the receiver is gone.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        let waker = {
            let mut s = lock(&self.0);
            if s.receiver_gone {
                return Err(item);
            }
            s.items.push_back(item);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        lock(&self.0).senders += 1;
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut s = lock(&self.0);
            s.senders -= 1;
            if s.senders == 0 { s.waker.take() } else { None }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Receiver<T> {
    /// The next item; `Ready(None)` once every sender is gone and the
    /// queue is empty.
    pub(crate) fn poll_recv(&mut self, cx: &Context<'_>) -> Poll<Option<T>> {
        let mut s = lock(&self.0);
        if let Some(item) = s.items.pop_front() {
            return Poll::Ready(Some(item));
        }
        if s.senders == 0 {
            return Poll::Ready(None);
        }
        park(&mut s.waker, cx);
        Poll::Pending
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut s = lock(&self.0);
        s.receiver_gone = true;
        s.items.clear();
    }
}

// ---------------------------------------------------------- subscriber queue

struct QueueState {
    events: VecDeque<LiveEvent>,
    /// In rows: a page of initial rows weighs its rows, any other event 1.
    capacity: usize,
    /// The weight of what is queued.
    weight: usize,
    /// The driver, waiting for room for a page.
    room_waker: Option<Waker>,
    /// `Some` once the driver ended the subscription (with an error or
    /// not). Boxed: an idle subscription's queue stays small.
    end: Option<Option<Box<Error>>>,
    consumer_gone: bool,
    waker: Option<Waker>,
}

impl QueueState {
    /// The next event. A queue emptied of anything but row changes (the
    /// subscription's set-up events), or after a burst that grew it past 64
    /// events, gives its room back: an idle subscription holds no event
    /// room, and a steady flow of changes keeps its few slots.
    fn pop(&mut self) -> Option<LiveEvent> {
        let e = self.events.pop_front()?;
        self.weight = self.weight.saturating_sub(weight(&e));
        if let Some(w) = self.room_waker.take() {
            w.wake();
        }
        if self.events.is_empty()
            && (self.events.capacity() > 64
                || !matches!(
                    e,
                    LiveEvent::Insert { .. } | LiveEvent::Update { .. } | LiveEvent::Delete { .. }
                ))
        {
            self.events = VecDeque::new();
        }
        Some(e)
    }
}

/// What an event weighs in a queue: a page of initial rows its rows, any
/// other event 1.
fn weight(e: &LiveEvent) -> usize {
    match e {
        LiveEvent::InitialRows { rows, .. } => rows.len().max(1),
        _ => 1,
    }
}

/// The driver's end of a subscription's bounded queue.
pub(crate) struct QueueTx(Arc<Mutex<QueueState>>);

/// The application's end.
pub(crate) struct QueueRx(Arc<Mutex<QueueState>>);

/// Why a queue did not take events.
pub(crate) enum Refused {
    /// The consumer fell behind: the queue is full.
    Full,
    /// The consumer is gone (its stream was dropped, or the call that was
    /// to return it was cancelled before the acknowledgement).
    Gone,
}

pub(crate) fn queue(capacity: usize) -> (QueueTx, QueueRx) {
    let state = Arc::new(Mutex::new(QueueState {
        events: VecDeque::new(),
        capacity: capacity.max(1),
        weight: 0,
        room_waker: None,
        end: None,
        consumer_gone: false,
        waker: None,
    }));
    (QueueTx(state.clone()), QueueRx(state))
}

impl QueueTx {
    /// Queues the events that fit, in order, without waiting. `Err` when
    /// some did not fit, or when the consumer is gone (the events are
    /// dropped). The consumer's waker, if it waits, goes to `wake`: the
    /// driver wakes consumers once per batch of frames, not per event.
    /// `Ok(true)`: the queue is half full or more; the driver lets the
    /// consumer run before it delivers more.
    pub(crate) fn push(&self, events: Vec<LiveEvent>, wake: &mut Vec<Waker>) -> Result<bool, Refused> {
        let mut s = lock(&self.0);
        if s.consumer_gone {
            return Err(Refused::Gone);
        }
        let mut fits = true;
        for e in events {
            let w = weight(&e);
            // One event always fits an empty queue (a page larger than the
            // whole buffer is taken when the consumer has read everything).
            if s.weight + w > s.capacity && !s.events.is_empty() {
                fits = false;
                break;
            }
            s.weight += w;
            s.events.push_back(e);
        }
        wake.extend(s.waker.take());
        if fits {
            Ok(s.weight * 2 >= s.capacity)
        } else {
            Err(Refused::Full)
        }
    }

    /// Whether a page of `need` rows fits now; if not, `cx` is woken when
    /// the consumer has read something.
    pub(crate) fn poll_room(&self, need: usize, cx: &Context<'_>) -> Poll<()> {
        let mut s = lock(&self.0);
        if s.events.is_empty() || s.capacity.saturating_sub(s.weight) >= need || s.consumer_gone {
            return Poll::Ready(());
        }
        s.room_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Ends the stream after the queued events, with a final error or not.
    pub(crate) fn end(self, error: Option<Error>) {
        let waker = {
            let mut s = lock(&self.0);
            s.end = Some(error.map(Box::new));
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Drop for QueueTx {
    fn drop(&mut self) {
        // A driver that stops without ending the stream (it cannot happen
        // by design; a panic could) ends it with an error, not silently.
        let waker = {
            let mut s = lock(&self.0);
            if s.end.is_none() {
                s.end = Some(Some(Box::new(Error::Closed)));
            }
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// What the consumer gets next.
pub(crate) enum Next {
    Event(LiveEvent),
    Error(Error),
    End,
}

impl QueueRx {
    pub(crate) fn poll_next(&mut self, cx: &Context<'_>) -> Poll<Next> {
        let mut s = lock(&self.0);
        if let Some(e) = s.pop() {
            return Poll::Ready(Next::Event(e));
        }
        match s.end.as_mut() {
            Some(end) => Poll::Ready(end.take().map_or(Next::End, |e| Next::Error(*e))),
            None => {
                park(&mut s.waker, cx);
                Poll::Pending
            }
        }
    }

    /// An event if one is queued, without waiting.
    pub(crate) fn try_next(&mut self) -> Option<LiveEvent> {
        lock(&self.0).pop()
    }
}

impl Drop for QueueRx {
    fn drop(&mut self) {
        let mut s = lock(&self.0);
        s.consumer_gone = true;
        s.events.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn cx_with() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn reply_delivers_value_or_closed() {
        let (w, waker) = cx_with();
        let mut cx = Context::from_waker(&waker);
        let (tx, mut rx) = reply::<u32>();
        assert!(Pin::new(&mut rx).poll(&mut cx).is_pending());
        tx.send(7);
        assert_eq!(w.0.load(Ordering::SeqCst), 1);
        assert!(matches!(Pin::new(&mut rx).poll(&mut cx), Poll::Ready(Ok(7))));

        let (tx, mut rx) = reply::<u32>();
        drop(tx);
        assert!(matches!(
            Pin::new(&mut rx).poll(&mut cx),
            Poll::Ready(Err(Error::Closed))
        ));
    }

    #[test]
    fn channel_ends_when_every_sender_is_gone() {
        let (_, waker) = cx_with();
        let cx = Context::from_waker(&waker);
        let (tx, mut rx) = channel::<u32>();
        let tx2 = tx.clone();
        tx.send(1).ok();
        drop(tx);
        assert!(matches!(rx.poll_recv(&cx), Poll::Ready(Some(1))));
        assert!(rx.poll_recv(&cx).is_pending());
        drop(tx2);
        assert!(matches!(rx.poll_recv(&cx), Poll::Ready(None)));
    }

    #[test]
    fn queue_reports_full_and_keeps_order() {
        let (_, waker) = cx_with();
        let cx = Context::from_waker(&waker);
        let (tx, mut rx) = queue(2);
        assert!(tx.push(vec![LiveEvent::Ready], &mut Vec::new()).is_ok());
        assert!(matches!(
            tx.push(vec![LiveEvent::Ready, LiveEvent::Ready], &mut Vec::new()),
            Err(Refused::Full)
        ));
        tx.end(Some(Error::Closed));
        assert!(matches!(rx.poll_next(&cx), Poll::Ready(Next::Event(LiveEvent::Ready))));
        assert!(matches!(rx.poll_next(&cx), Poll::Ready(Next::Event(LiveEvent::Ready))));
        assert!(matches!(rx.poll_next(&cx), Poll::Ready(Next::Error(Error::Closed))));
        assert!(matches!(rx.poll_next(&cx), Poll::Ready(Next::End)));

        let (tx, rx) = queue(2);
        drop(rx);
        assert!(matches!(
            tx.push(vec![LiveEvent::Ready], &mut Vec::new()),
            Err(Refused::Gone)
        ));
    }
    #[test]
    fn an_idle_queue_holds_no_event_room() {
        let (_, waker) = cx_with();
        let cx = Context::from_waker(&waker);
        let room = |rx: &QueueRx| lock(&rx.0).events.capacity();
        let (tx, mut rx) = queue(1024);
        let mut wake = Vec::new();
        let insert = || LiveEvent::Insert {
            row: Default::default(),
        };
        // Set-up events read: no room kept.
        assert!(tx.push(vec![LiveEvent::Ready, LiveEvent::Ready], &mut wake).is_ok());
        while let Poll::Ready(Next::Event(_)) = rx.poll_next(&cx) {}
        assert_eq!(room(&rx), 0);
        // Changes flowing one at a time keep their few slots.
        assert!(tx.push(vec![insert()], &mut wake).is_ok());
        assert!(matches!(rx.poll_next(&cx), Poll::Ready(Next::Event(_))));
        let kept = room(&rx);
        assert!((1..=64).contains(&kept), "{kept}");
        // A burst's room is given back once read.
        assert!(tx.push((0..500).map(|_| insert()).collect(), &mut wake).is_ok());
        while rx.try_next().is_some() {}
        assert_eq!(room(&rx), 0);
    }

    #[test]
    fn pages_weigh_their_rows_and_the_next_waits_for_room() {
        let (woken, waker) = cx_with();
        let cx = Context::from_waker(&waker);
        let page = |n: usize| LiveEvent::InitialRows {
            rows: vec![Default::default(); n],
            has_more: true,
        };
        let (tx, mut rx) = queue(1000);
        let mut wake = Vec::new();
        assert!(matches!(tx.push(vec![page(500)], &mut wake), Ok(true)), "half full");
        assert!(tx.poll_room(500, &cx).is_ready(), "room for one more like it");
        assert!(matches!(tx.push(vec![page(500)], &mut wake), Ok(true)));
        assert!(tx.poll_room(500, &cx).is_pending(), "no room for a third");
        assert!(
            matches!(tx.push(vec![page(1)], &mut wake), Err(Refused::Full)),
            "bounded in rows"
        );
        // The consumer reads a page: the driver is woken, and there is room.
        assert!(matches!(rx.poll_next(&cx), Poll::Ready(Next::Event(_))));
        assert!(woken.0.load(Ordering::SeqCst) > 0, "the driver is woken");
        assert!(tx.poll_room(500, &cx).is_ready());
        // A page larger than the whole buffer is taken by an empty queue.
        let (tx, _rx) = queue(100);
        assert!(tx.push(vec![page(500)], &mut wake).is_ok());
        assert!(matches!(tx.push(vec![page(1)], &mut wake), Err(Refused::Full)));
    }
}
