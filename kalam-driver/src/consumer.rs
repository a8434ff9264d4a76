//! The topic consumer: a loop over kalam-proto's [`ConsumerState`].
//!
//! Every decision (where a poll starts, how long an empty poll backs off,
//! when a batch is committed, which errors end the consumer) is the state
//! machine's; this module only performs its steps: requests go to the
//! client's driver as operations (so they carry the JWT and recover from
//! `TOKEN_EXPIRED` like queries), waits are the runtime's timer.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_core::Stream;
use kalam_proto::{
    AckResponse, AutoOffsetReset, ConsumerConfig, ConsumerRecord, ConsumerState, ConsumerStep, Error, Instant,
    Operation, Reply, Result,
};

use crate::msg::Command;
use crate::sync::{Sender, reply};

/// A timer future, boxed so the consumer needs no runtime parameter.
pub(crate) type BoxSleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The runtime's clock and timer, as plain functions.
#[derive(Clone, Copy)]
pub(crate) struct Timer {
    pub(crate) now: fn() -> std::time::Instant,
    pub(crate) sleep_until: fn(std::time::Instant) -> BoxSleep,
}

/// Builds a [`TopicConsumer`] (from
/// [`KalamLinkClient::consumer`](crate::KalamLinkClient::consumer)).
///
/// `topic` and `group_id` are required; the rest have defaults: start at
/// [`AutoOffsetReset::Latest`], partition 0, 100 records per poll, polls
/// 200 ms apart when there is nothing new, backing off to 5 s, manual
/// acknowledgement.
#[derive(Clone)]
pub struct ConsumerBuilder {
    commands: Sender<Command>,
    timer: Timer,
    config: ConsumerConfig,
}

impl std::fmt::Debug for ConsumerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ConsumerBuilder {
    pub(crate) fn new(commands: Sender<Command>, timer: Timer) -> Self {
        ConsumerBuilder {
            commands,
            timer,
            config: ConsumerConfig::new("", ""),
        }
    }

    /// The topic to read.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.config.topic = topic.into();
        self
    }

    /// The consumer group: its committed offset is where reading resumes.
    pub fn group_id(mut self, group_id: impl Into<String>) -> Self {
        self.config.group_id = group_id.into();
        self
    }

    /// Where to start when the group has committed nothing yet on this
    /// partition (the server ignores it once the group has a commit).
    pub fn auto_offset_reset(mut self, start: AutoOffsetReset) -> Self {
        self.config.start = start;
        self
    }

    /// The partition to read (default 0).
    pub fn partition_id(mut self, partition: u32) -> Self {
        self.config.partition_id = partition;
        self
    }

    /// Most records per poll (default 100).
    pub fn max_poll_records(mut self, limit: u64) -> Self {
        self.config.max_poll_records = limit;
        self
    }

    /// The wait after a poll that found nothing (default 200 ms). The server
    /// answers at once rather than holding the request open, so each further
    /// empty poll doubles the wait, up to [`max_backoff`](Self::max_backoff).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.config.poll_interval = interval;
        self
    }

    /// The longest wait between polls (default 5 s).
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.config.max_backoff = max;
        self
    }

    /// Commit each batch automatically when the next one is asked for, that
    /// is, once the application has come back for more (default off: call
    /// [`TopicConsumer::ack`]).
    pub fn enable_auto_commit(mut self, enabled: bool) -> Self {
        self.config.auto_commit = enabled;
        self
    }

    /// The consumer. Fails with [`Error::InvalidInput`] without a topic or a
    /// group. Nothing is sent until the first poll.
    pub fn build(self) -> Result<TopicConsumer> {
        if self.config.topic.trim().is_empty() {
            return Err(Error::InvalidInput("the consumer needs a topic (.topic(..))".into()));
        }
        if self.config.group_id.trim().is_empty() {
            return Err(Error::InvalidInput("the consumer needs a group (.group_id(..))".into()));
        }
        Ok(TopicConsumer {
            commands: self.commands,
            origin: (self.timer.now)(),
            timer: self.timer,
            state: ConsumerState::new(self.config),
            buffer: VecDeque::new(),
            finished: None,
        })
    }
}

/// Reads a topic for one consumer group, batch by batch ([`poll`](Self::poll))
/// or record by record ([`next`](Self::next), [`into_stream`](Self::into_stream)).
///
/// **Delivery is at least once.** The server resumes a group at its last
/// committed offset + 1, so a record handed out and not acknowledged when
/// the consumer stops (or crashes) is delivered again to the next consumer
/// of the group. Acknowledge after processing: [`ack`](Self::ack) with the
/// record's offset (everything up to it counts as processed), or
/// [`enable_auto_commit`](ConsumerBuilder::enable_auto_commit) to commit each
/// batch when the next one is asked for. Dropping the consumer commits
/// nothing.
///
/// The server claims the records a poll hands out for the group: they are
/// not handed out again to the group until they are acknowledged or their
/// claim expires (60 s by default on the server); then they are delivered
/// again, to this consumer or another one of the group.
///
/// Errors are yielded, and reading goes on after the back-off, except for
/// those that cannot pass by waiting: a role that may not consume (403
/// `FORBIDDEN`: topics need the `service`, `dba` or `system` role), an
/// unknown topic (404 `NOT_FOUND`), refused credentials, and a client that
/// has shut down ([`Error::Closed`]). After one of those the consumer ends
/// ([`next`](Self::next) returns `None`).
///
/// The consumer keeps the client's driver running while it is alive.
pub struct TopicConsumer {
    commands: Sender<Command>,
    timer: Timer,
    origin: std::time::Instant,
    state: ConsumerState,
    buffer: VecDeque<ConsumerRecord>,
    /// The error that ended the consumer.
    finished: Option<Error>,
}

impl std::fmt::Debug for TopicConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicConsumer")
            .field("config", self.state.config())
            .field("position", &self.state.position())
            .field("committed", &self.state.committed())
            .field("finished", &self.finished.is_some())
            .finish_non_exhaustive()
    }
}

impl TopicConsumer {
    /// The consumer's settings.
    pub fn config(&self) -> &ConsumerConfig {
        self.state.config()
    }

    /// The offset of the next record this consumer will hand out, once known.
    pub fn position(&self) -> Option<u64> {
        self.state.position()
    }

    /// The highest offset this consumer has committed.
    pub fn committed(&self) -> Option<u64> {
        self.state.committed()
    }

    /// Whether the consumer ended on an error that waiting cannot fix.
    pub fn is_finished(&self) -> bool {
        self.finished.is_some()
    }

    /// The next batch of records (never empty): polls, waiting between
    /// empty polls, until records arrive or a request fails. With
    /// auto-commit, the previous batch is committed first. Once the
    /// consumer has ended, the error that ended it.
    ///
    /// Not cancel-safe: a poll dropped while its request is in flight
    /// loses that answer; the server keeps those records claimed for the
    /// group until the claim expires, then delivers them again.
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>> {
        if let Some(first) = self.buffer.pop_front() {
            let mut batch = vec![first];
            batch.extend(self.buffer.drain(..));
            return Ok(batch);
        }
        loop {
            if let Some(e) = &self.finished {
                return Err(e.clone());
            }
            match self.state.next_step(self.now()) {
                ConsumerStep::Wait(at) => (self.timer.sleep_until)(self.origin + at.as_duration()).await,
                ConsumerStep::Ack(request) => match self.submit(Operation::AckTopic(request)).await {
                    Ok(r) => self.state.handle_ack(r),
                    Err(e) => return Err(self.failed(e)),
                },
                ConsumerStep::Consume(request) => match self.submit(Operation::ConsumeTopic(request)).await {
                    Ok(r) => {
                        let batch = self.state.handle_consume(r, self.now());
                        if !batch.is_empty() {
                            return Ok(batch);
                        }
                    }
                    Err(e) => return Err(self.failed(e)),
                },
            }
        }
    }

    /// The next record; `None` once the consumer has ended (after an error
    /// that waiting cannot fix, which is yielded first).
    pub async fn next(&mut self) -> Option<Result<ConsumerRecord>> {
        if let Some(record) = self.buffer.pop_front() {
            return Some(Ok(record));
        }
        if self.finished.is_some() {
            return None;
        }
        match self.poll().await {
            Ok(batch) => {
                self.buffer.extend(batch);
                self.buffer.pop_front().map(Ok)
            }
            Err(e) => Some(Err(e)),
        }
    }

    /// Commits `offset` for the group: every record up to and including it
    /// counts as processed and is not delivered to the group again.
    pub async fn ack(&mut self, offset: u64) -> Result<AckResponse> {
        let request = self.state.ack_request(offset);
        let r = self.submit(Operation::AckTopic(request)).await?;
        self.state.handle_ack(r);
        Ok(r)
    }

    /// Commits everything handed out so far (what auto-commit would commit
    /// before the next poll), for example before stopping. `None` when there
    /// is nothing new to commit.
    pub async fn commit(&mut self) -> Result<Option<AckResponse>> {
        let Some(upto) = self.handed_out() else {
            return Ok(None);
        };
        if self.state.committed().is_some_and(|c| c >= upto) {
            return Ok(None);
        }
        self.ack(upto).await.map(Some)
    }

    /// The records as a [`Stream`] (same items as [`next`](Self::next)).
    pub fn into_stream(self) -> impl Stream<Item = Result<ConsumerRecord>> + Send {
        futures_util::stream::unfold(self, |mut consumer| async move {
            let item = consumer.next().await?;
            Some((item, consumer))
        })
    }

    /// The highest offset handed to the application (not counting records
    /// still buffered for [`next`](Self::next)).
    fn handed_out(&self) -> Option<u64> {
        let delivered = self.state.delivered()?;
        match self.buffer.front() {
            Some(first) => first.offset.checked_sub(1).map(|o| o.min(delivered)),
            None => Some(delivered),
        }
    }

    fn now(&self) -> Instant {
        Instant::from_duration((self.timer.now)().saturating_duration_since(self.origin))
    }

    fn failed(&mut self, error: Error) -> Error {
        if self.state.handle_error(&error, self.now()) {
            self.finished = Some(error.clone());
        }
        error
    }

    async fn submit<T: TryFrom<Reply, Error = Reply>>(&self, op: Operation) -> Result<T> {
        let (tx, rx) = reply();
        self.commands.send(Command::Submit(op, tx)).map_err(|_| Error::Closed)?;
        rx.await??.into_reply()
    }
}
