//! The driver task ends abnormally (the runtime it runs on is shut down
//! under it) while a consumer, on another thread, waits for the next live
//! event: the consumer is woken and its stream ends. It never waits for
//! good.

use std::sync::Arc;
use std::sync::mpsc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::Duration;

use kalam_conformance::TestServer;
use kalam_conformance::scenarios::{root, setup_table, until_ready};
use kalam_tokio::LiveEvents;
use kalam_tokio::rt::Tokio;

/// Wakes a parked thread.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls the stream's next event on this thread, parked between polls: no
/// runtime of its own, so only the driver can wake it. `waiting` is told
/// once the stream has the waker (its first poll was pending).
fn next_on_this_thread(stream: &mut LiveEvents, waiting: mpsc::Sender<()>) -> Option<String> {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut next = std::pin::pin!(stream.next());
    loop {
        if let Poll::Ready(item) = next.as_mut().poll(&mut cx) {
            return item.map(|r| format!("{r:?}"));
        }
        let _ = waiting.send(());
        // A spurious unpark only polls again.
        std::thread::park();
    }
}

#[test]
fn a_consumer_waiting_when_the_runtime_shuts_down_is_woken() {
    // The kit on a runtime of its own, which lives through the test.
    let kit_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = kit_rt.block_on(TestServer::start());
    let url = server.url();

    // The client and its driver on another runtime.
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let stream = client_rt.block_on(async {
        let client = root::<Tokio>(&server, &url);
        let table = setup_table(&client, "driver_end").await;
        let mut stream = client
            .live_events(&format!("SELECT * FROM {table}"))
            .await
            .expect("subscribe");
        until_ready(&mut stream).await;
        // The client handle goes; the driver lives on for the stream.
        stream
    });

    // A consumer thread parks in next(): nothing comes.
    let (waiting_tx, waiting_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let consumer = std::thread::spawn(move || {
        let mut stream = stream;
        done_tx.send(next_on_this_thread(&mut stream, waiting_tx)).unwrap();
    });
    waiting_rx.recv().expect("the consumer polled and waits");
    assert!(done_rx.try_recv().is_err(), "nothing to deliver: the consumer waits");

    // The runtime under the driver goes away.
    client_rt.shutdown_timeout(Duration::from_secs(5));

    // A guard against a hang, not a synchronisation: the consumer must
    // have been woken by the driver's end.
    let item = done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the waiting consumer was never woken");
    assert!(
        item.as_deref().is_none_or(|e| e.starts_with("Err")),
        "the stream ends (or says why): {item:?}"
    );
    consumer.join().unwrap();
    kit_rt.block_on(server.shutdown());
}
