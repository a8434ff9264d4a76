//! The receive timeout of every exchange with one timer.
//!
//! A timer per exchange costs a query more than it seems on async-io:
//! inserting a timer notifies the reactor (an eventfd write, and a wake-up of
//! whichever thread waits in `epoll`), a second reactor cycle per query. All
//! of one client's exchanges have the same timeout, so their deadlines come
//! in order: one sleeper task waits for the earliest and is re-armed only
//! when it fires (or, for a deadline earlier than the one it waits for, at
//! once), not once per exchange.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use kalam_proto::TransportError;

/// The deadlines of a client's exchanges in progress.
#[derive(Default)]
pub(crate) struct Deadlines(Mutex<State>);

#[derive(Default)]
struct State {
    waiting: BTreeMap<(Instant, u64), Waker>,
    next: u64,
    /// The deadline the sleeper waits for, if it runs.
    armed: Option<Instant>,
    sleeper: Option<Waker>,
}

fn lock(d: &Deadlines) -> MutexGuard<'_, State> {
    d.0.lock().unwrap_or_else(|e| e.into_inner())
}

impl Deadlines {
    /// `exchange`, failing with [`TransportError::Timeout`] once `limit` has
    /// passed.
    pub(crate) async fn within<T>(
        self: &Arc<Self>,
        limit: Duration,
        exchange: impl Future<Output = Result<T, TransportError>>,
    ) -> Result<T, TransportError> {
        let now = Instant::now();
        // A limit too large for the clock (`Duration::MAX`): a year.
        let deadline = now
            .checked_add(limit)
            .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
            .unwrap_or(now);
        let mut exchange = std::pin::pin!(exchange);
        let mut entry = Entry {
            deadlines: self,
            key: None,
        };
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = exchange.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            if Instant::now() >= deadline {
                return Poll::Ready(Err(TransportError::Timeout(limit)));
            }
            entry.wait(deadline, cx);
            Poll::Pending
        })
        .await
    }
}

/// An exchange's place among the deadlines, left when it ends.
struct Entry<'a> {
    deadlines: &'a Arc<Deadlines>,
    key: Option<(Instant, u64)>,
}

impl Entry<'_> {
    fn wait(&mut self, deadline: Instant, cx: &Context<'_>) {
        let mut s = lock(self.deadlines);
        let key = match self.key {
            Some(key) => key,
            None => {
                s.next += 1;
                let key = (deadline, s.next);
                self.key = Some(key);
                key
            }
        };
        match s.waiting.get_mut(&key) {
            Some(w) if w.will_wake(cx.waker()) => {}
            Some(w) => w.clone_from(cx.waker()),
            None => {
                s.waiting.insert(key, cx.waker().clone());
            }
        }
        match s.armed {
            // The sleeper wakes in time for this one.
            Some(armed) if armed <= deadline => {}
            Some(_) => {
                // Earlier than it waits for: it re-arms.
                if let Some(w) = &s.sleeper {
                    w.wake_by_ref();
                }
            }
            None => {
                s.armed = Some(deadline);
                drop(s);
                async_std::task::spawn(Sleeper {
                    deadlines: self.deadlines.clone(),
                    timer: None,
                });
            }
        }
    }
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            lock(self.deadlines).waiting.remove(&key);
        }
    }
}

/// Waits for the earliest deadline, wakes the exchanges past theirs, and
/// ends when none is left.
struct Sleeper {
    deadlines: Arc<Deadlines>,
    timer: Option<(Instant, async_io::Timer)>,
}

impl Future for Sleeper {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            let now = Instant::now();
            let (due, earliest) = {
                let mut s = lock(&this.deadlines);
                let due: Vec<Waker> = s.waiting.range(..(now, u64::MAX)).map(|(_, w)| w.clone()).collect();
                // The woken find their deadline passed and leave.
                let later = s.waiting.keys().map(|(at, _)| *at).find(|at| *at > now);
                s.armed = later;
                match later {
                    None => {
                        s.sleeper = None;
                    }
                    Some(_) => match &mut s.sleeper {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        w => *w = Some(cx.waker().clone()),
                    },
                }
                (due, later)
            };
            due.into_iter().for_each(Waker::wake);
            let Some(at) = earliest else {
                return Poll::Ready(());
            };
            match &mut this.timer {
                Some((armed, _)) if *armed == at => {}
                t => *t = Some((at, async_io::Timer::at(at))),
            }
            if let Some((_, timer)) = &mut this.timer
                && Pin::new(timer).poll(cx).is_pending()
            {
                return Poll::Pending;
            }
        }
    }
}
