//! Who polls the driver: its own task, or a caller waiting for an answer.
//!
//! The driver ([`Driver::run`](crate::driver::Driver::run)) is one future.
//! Its own task (the *home* task, spawned on the runtime) polls it; where the
//! runtime allows it ([`Runtime::DRIVE_IN_CALLER`]), a caller waiting for
//! an answer (a *guest*: `execute_query` awaited in `block_on`, or in any
//! task) polls it too, on its own thread, while no one else is. A query then
//! runs from the caller's command to its answer on the caller's thread, as a
//! hand-written loop would, instead of crossing to the driver's thread and
//! back (two cross-thread wake-ups: a third of a query's time on async-std
//! from `block_on`).
//!
//! One poller at a time: `state` is `IDLE`, `RUNNING` (someone is polling)
//! or `NOTIFIED` (woken while running: the poller hands the wake on when it
//! is done), or `DONE`. A wake of the driver (its I/O, a command, a timer)
//! goes to one waiting guest (the newest), or to the home task when there
//! is none. A guest that leaves (answered, or dropped) holding a wake it did
//! not use hands it on. A guest that is woken and then never polled (a future
//! kept but left alone by its owner) cannot stop the driver: while guests
//! come, the home task looks every [`WATCHDOG`], and a guest holding a wake
//! nobody used since its last look is marked stalled: it is handed no wake
//! until it is polled again, and the home task drives meanwhile. So live
//! queries and other callers go on whatever any one caller does, after one
//! watchdog period at most.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use kalam_proto::Error;

use crate::adapter::Runtime;
use crate::msg::Command;
use crate::sync::{ReplyRx, Sender};

const IDLE: u8 = 0;
const RUNNING: u8 = 1;
const NOTIFIED: u8 = 2;
const DONE: u8 = 3;

/// How long a wake handed to a guest may stay unused before the home task
/// drives instead.
pub(crate) const WATCHDOG: Duration = Duration::from_millis(10);

/// How many times a poller polls again at once when woken meanwhile (its
/// exchanges' answers arriving as it works), before it hands the wake on
/// through the executor. A driver that yields (to let subscribers run) is
/// never polled again at once.
const AGAIN: usize = 256;

type Run = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The driver future and who polls it.
pub(crate) struct Shared {
    state: AtomicU8,
    future: Mutex<Option<Run>>,
    wakers: Mutex<Wakers>,
    /// Polls started, for the watchdog.
    polls: AtomicU64,
    /// Whether callers may poll (the runtime's [`Runtime::DRIVE_IN_CALLER`]).
    guests: bool,
}

struct Guest {
    id: u64,
    waker: Waker,
    /// Handed a wake and not polled for a watchdog period since: handed
    /// none until it is polled again.
    stalled: bool,
}

#[derive(Default)]
struct Wakers {
    home: Option<Waker>,
    guests: Vec<Guest>,
    /// Guests registered so far (the next one's id).
    entered: u64,
    /// The guest last handed a wake, until someone polls the driver.
    baton: Option<u64>,
    /// Whether the home task's watchdog is armed (guests came lately).
    watching: bool,
}

thread_local! {
    /// Set by a driver that yields to the executor (see [`yield_soon`]).
    static YIELDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Set while this thread polls a driver: a caller polled from inside
    /// it (an application callback waiting on a client) must not drive.
    static DRIVING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        loop {
            match self.state.load(SeqCst) {
                IDLE => return self.hand_on(),
                RUNNING => {
                    if self.state.compare_exchange(RUNNING, NOTIFIED, SeqCst, SeqCst).is_ok() {
                        return;
                    }
                }
                _ => return,
            }
        }
    }
}

impl Shared {
    /// The driver `run`, polled by its home task (spawned here with `R`)
    /// and, if `R` allows it, by callers while they wait.
    pub(crate) fn start<R: Runtime>(run: impl Future<Output = ()> + Send + 'static) -> Arc<Shared> {
        let shared = Arc::new(Shared {
            state: AtomicU8::new(IDLE),
            future: Mutex::new(Some(Box::pin(run))),
            wakers: Mutex::default(),
            polls: AtomicU64::new(0),
            guests: R::DRIVE_IN_CALLER,
        });
        R::spawn(Home::<R> {
            shared: shared.clone(),
            watchdog: None,
            seen_polls: 0,
            seen_entries: 0,
        });
        shared
    }

    /// Polls the driver once, unless someone else is polling it (they will
    /// see what woke us) or it has ended.
    fn drive(self: &Arc<Self>) {
        if self.state.compare_exchange(IDLE, RUNNING, SeqCst, SeqCst).is_err() {
            return;
        }
        lock(&self.wakers).baton = None;
        // Should anything outside the caught poll unwind (a waker, a drop),
        // the driver is not left marked as running for good.
        let _unwind = Unwind(self);
        let waker = Waker::from(self.clone());
        let mut cx = Context::from_waker(&waker);
        // Woken while it ran (its own I/O became ready meanwhile): polled
        // again right here a few times, rather than through the executor.
        for again in 0.. {
            self.polls.fetch_add(1, SeqCst);
            let ended = {
                let mut slot = lock(&self.future);
                let ended = match slot.as_mut() {
                    Some(run) => {
                        let outer = DRIVING.replace(true);
                        let poll = std::panic::catch_unwind(AssertUnwindSafe(|| run.as_mut().poll(&mut cx)));
                        DRIVING.set(outer);
                        poll.unwrap_or_else(|_| {
                            tracing::error!("the kalam client driver panicked; the client is closed");
                            Poll::Ready(())
                        })
                        .is_ready()
                    }
                    None => true,
                };
                if ended {
                    // Dropping it ends every stream and answers every waiter.
                    *slot = None;
                }
                ended
            };
            if ended {
                self.state.store(DONE, SeqCst);
                let (home, guests) = {
                    let mut w = lock(&self.wakers);
                    (w.home.take(), std::mem::take(&mut w.guests))
                };
                home.into_iter()
                    .chain(guests.into_iter().map(|g| g.waker))
                    .for_each(Waker::wake);
                return;
            }
            let yielding = YIELDING.replace(false);
            if !yielding && again < AGAIN && self.state.compare_exchange(NOTIFIED, RUNNING, SeqCst, SeqCst).is_ok() {
                continue;
            }
            // Back to IDLE (never over DONE: the home task's drop may have
            // ended the driver meanwhile).
            let was = self
                .state
                .fetch_update(SeqCst, SeqCst, |s| (s == RUNNING || s == NOTIFIED).then_some(IDLE));
            if was == Ok(NOTIFIED) {
                self.hand_on();
            }
            return;
        }
    }

    /// Wakes whoever polls next: the newest waiting guest that is not
    /// stalled, else home.
    fn hand_on(&self) {
        let waker = {
            let mut w = lock(&self.wakers);
            match w.guests.iter().rev().find(|g| !g.stalled) {
                Some(g) => {
                    let (id, waker) = (g.id, g.waker.clone());
                    w.baton = Some(id);
                    Some(waker)
                }
                None => w.home.clone(),
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Registers (or updates) a waiting guest; `false` when guests do not
    /// drive here, or when the caller is itself polled by a driver (an
    /// application callback waiting on a client).
    fn enter(&self, id: &mut Option<u64>, cx: &Context<'_>) -> bool {
        if !self.guests || self.state.load(SeqCst) == DONE || DRIVING.get() {
            return false;
        }
        let home = {
            let mut w = lock(&self.wakers);
            match id.and_then(|id| w.guests.iter_mut().find(|g| g.id == id)) {
                Some(g) => {
                    // Polled again: wakes come to it again.
                    g.stalled = false;
                    if !g.waker.will_wake(cx.waker()) {
                        g.waker.clone_from(cx.waker());
                    }
                    None
                }
                None => {
                    let new = w.entered;
                    w.entered += 1;
                    w.guests.push(Guest {
                        id: new,
                        waker: cx.waker().clone(),
                        stalled: false,
                    });
                    *id = Some(new);
                    // The first guest in a while: the home task arms its
                    // watchdog.
                    (!std::mem::replace(&mut w.watching, true))
                        .then(|| w.home.clone())
                        .flatten()
                }
            }
        };
        if let Some(h) = home {
            h.wake();
        }
        true
    }

    fn holds_baton(&self, id: Option<u64>) -> bool {
        id.is_some() && lock(&self.wakers).baton == id
    }

    /// A guest leaves; a wake it was handed and did not use goes on.
    fn leave(&self, id: &mut Option<u64>) {
        let Some(id) = id.take() else { return };
        let unused = {
            let mut w = lock(&self.wakers);
            w.guests.retain(|g| g.id != id);
            if w.baton == Some(id) {
                w.baton = None;
                true
            } else {
                false
            }
        };
        if unused {
            self.hand_on();
        }
    }
}

/// Tells the poller of the driver being polled on this thread that the
/// driver yields: the wake it gives itself goes through the executor, so
/// whatever else is ready (subscribers) runs first.
pub(crate) fn yield_soon() {
    YIELDING.set(true);
}

/// Unmarks a poller that unwinds out of [`Shared::drive`] (outside the
/// poll it catches), so that the next wake polls again.
struct Unwind<'a>(&'a Shared);

impl Drop for Unwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self
                .0
                .state
                .fetch_update(SeqCst, SeqCst, |s| (s == RUNNING || s == NOTIFIED).then_some(IDLE));
        }
    }
}

/// The home task: polls the driver when woken, and, while guests come,
/// looks every [`WATCHDOG`] for a wake a guest left unused.
struct Home<R: Runtime> {
    shared: Arc<Shared>,
    watchdog: Option<Pin<Box<R::Sleep>>>,
    seen_polls: u64,
    seen_entries: u64,
}

impl<R: Runtime> Future for Home<R> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Fields are `Unpin` (the timer is boxed).
        let this = self.get_mut();
        let shared = this.shared.clone();
        let mut watching = {
            let mut w = lock(&shared.wakers);
            match &mut w.home {
                Some(h) if h.will_wake(cx.waker()) => {}
                h => *h = Some(cx.waker().clone()),
            }
            w.watching
        };
        // The watchdog first: a wake handed to a guest that nobody has used
        // since the last look (no poll of the driver in between) marks that
        // guest stalled; wakes then come here until it is polled again.
        while watching {
            let timer = this
                .watchdog
                .get_or_insert_with(|| Box::pin(R::sleep_until(crate::driver::later(R::now(), WATCHDOG))));
            if timer.as_mut().poll(cx).is_pending() {
                break;
            }
            this.watchdog = None;
            let polls = shared.polls.load(SeqCst);
            let mut w = lock(&shared.wakers);
            if polls == this.seen_polls
                && let Some(id) = w.baton.take()
            {
                tracing::debug!("a caller left the driver's wake unused; the driver's task goes on");
                if let Some(g) = w.guests.iter_mut().find(|g| g.id == id) {
                    g.stalled = true;
                }
            }
            if w.guests.is_empty() && w.entered == this.seen_entries {
                // No guest since the last look: no more looks until one comes.
                w.watching = false;
                watching = false;
            }
            this.seen_entries = w.entered;
        }
        if !watching {
            this.watchdog = None;
        }
        shared.drive();
        // Counted after its own poll: the next look asks whether anyone
        // else polled since.
        this.seen_polls = shared.polls.load(SeqCst);
        if shared.state.load(SeqCst) == DONE {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl<R: Runtime> Drop for Home<R> {
    /// The runtime dropped the driver's task (it shut down): the driver ends
    /// with it, as when it ran in that task alone, so every stream ends and
    /// every waiter is answered.
    fn drop(&mut self) {
        // Waits for a caller's poll in progress, if any, to finish.
        let run = lock(&self.shared.future).take();
        if run.is_none() {
            return;
        }
        self.shared.state.store(DONE, SeqCst);
        drop(run);
        let guests = std::mem::take(&mut lock(&self.shared.wakers).guests);
        guests.into_iter().for_each(|g| g.waker.wake());
    }
}

/// Sends a command and waits for its answer, polling the driver meanwhile
/// if no one else is (see the module).
pub(crate) struct Call<'a, T> {
    shared: &'a Arc<Shared>,
    commands: &'a Sender<Command>,
    command: Option<Command>,
    rx: &'a mut ReplyRx<T>,
    guest: Option<u64>,
}

impl<'a, T> Call<'a, T> {
    pub(crate) fn new(
        shared: &'a Arc<Shared>,
        commands: &'a Sender<Command>,
        command: Command,
        rx: &'a mut ReplyRx<T>,
    ) -> Self {
        Call {
            shared,
            commands,
            command: Some(command),
            rx,
            guest: None,
        }
    }
}

impl<T> Future for Call<'_, T> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // Registered before the command goes, so the wake it causes comes
        // here rather than to the home task on another thread.
        let guest = this.shared.enter(&mut this.guest, cx);
        if let Some(command) = this.command.take()
            && this.commands.send(command).is_err()
        {
            this.shared.leave(&mut this.guest);
            return Poll::Ready(Err(Error::Closed));
        }
        if let Poll::Ready(answer) = Pin::new(&mut *this.rx).poll(cx) {
            // Handed a wake of the driver: use it here rather than pass it
            // on to another caller through the executor.
            if this.shared.holds_baton(this.guest) {
                this.shared.drive();
            }
            this.shared.leave(&mut this.guest);
            return Poll::Ready(answer);
        }
        if !guest {
            return Poll::Pending;
        }
        this.shared.drive();
        match Pin::new(&mut *this.rx).poll(cx) {
            Poll::Ready(answer) => {
                this.shared.leave(&mut this.guest);
                Poll::Ready(answer)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> Drop for Call<'_, T> {
    fn drop(&mut self) {
        self.shared.leave(&mut self.guest);
    }
}
