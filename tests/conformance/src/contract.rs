//! Conformance scenarios for the contract under cancellation and failure:
//! a caller that gives up leaves nothing held.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Wake, Waker};

use kalam_driver::Runtime;

use crate::Backend;
use crate::scenarios::{eventually, root, setup_table};

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A `live_events` call dropped after the server acknowledged (its answer
/// waiting, not yet taken: a `select!` that chose another branch) holds no
/// server subscription. Twelve such calls on a quiet table, against the
/// server's limit of 10 per user, and a thirteenth subscribes.
pub async fn a_cancelled_live_events_holds_no_server_subscription<R: Runtime>(b: &dyn Backend) {
    let client = root::<R>(b, &b.url());
    let table = setup_table(&client, "conf_cancel").await;
    client.connect().await.expect("connect");
    let mut cancelled = 0;
    for i in 0..50 {
        if cancelled == 12 {
            break;
        }
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let sql = format!("SELECT * FROM {table} WHERE id = {i}");
        let mut call = Box::pin(client.live_events_with(&sql, None));
        if call.as_mut().poll(&mut Context::from_waker(&waker)).is_ready() {
            // Answered within the first poll (the driver on another
            // thread was that quick): not the case under test; the stream
            // is dropped and unsubscribes.
            continue;
        }
        // Woken: the acknowledgement is in; the caller gives up without
        // polling again.
        eventually("the subscription's answer", || flag.0.load(Ordering::SeqCst)).await;
        drop(call);
        cancelled += 1;
    }
    assert_eq!(cancelled, 12);
    let s = client.live_events_with(&format!("SELECT * FROM {table}"), None).await;
    assert!(s.is_ok(), "a slot leaked by a cancelled call: {:?}", s.err());
}

/// A reader that gives `good` bytes, then panics.
struct PanickingReader {
    good: usize,
}

impl futures_util::AsyncRead for PanickingReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.good == 0 {
            panic!("the application's reader fails");
        }
        let n = buf.len().min(self.good);
        buf[..n].fill(7);
        self.good -= n;
        std::task::Poll::Ready(Ok(n))
    }
}

/// An upload whose reader panics mid-body fails with an error naming the
/// file; the panic never reaches the driver: the same client goes on.
pub async fn a_panicking_upload_reader_fails_only_its_upload<R: Runtime>(b: &dyn Backend) {
    let client = root::<R>(b, &b.url());
    client
        .execute_query("CREATE NAMESPACE IF NOT EXISTS conf_panic")
        .await
        .expect("namespace");
    client
        .execute_query("CREATE TABLE IF NOT EXISTS conf_panic.docs (id BIGINT PRIMARY KEY, f FILE) WITH (TYPE='USER')")
        .await
        .expect("table");
    let reader = PanickingReader { good: 64 * 1024 };
    let e = client
        .execute_with_files(
            kalam_driver::prelude::QueryRequest::new(r#"INSERT INTO conf_panic.docs (id, f) VALUES (1, FILE("doc"))"#),
            vec![kalam_driver::prelude::FileUpload::from_reader(
                "doc",
                "boom.bin",
                reader,
                1 << 20,
            )],
        )
        .await
        .expect_err("the reader panicked");
    assert!(
        e.to_string().contains("boom.bin") && e.to_string().contains("panicked"),
        "{e}"
    );
    let r = client
        .execute_query("SELECT id FROM conf_panic.docs")
        .await
        .expect("the client goes on");
    assert_eq!(r.rows().count(), 0, "nothing was inserted");
}

/// A reader that gives `first` bytes, then waits for its gate, then gives
/// the rest up to `total`; it notes how far it got and when it is dropped.
struct GatedReader {
    sent: usize,
    first: usize,
    total: usize,
    gate: Arc<Gate>,
}

#[derive(Default)]
struct Gate {
    open: AtomicBool,
    waker: std::sync::Mutex<Option<Waker>>,
    first_sent: AtomicBool,
    finished: AtomicBool,
    dropped: AtomicBool,
}

impl Gate {
    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
    }
}

impl futures_util::AsyncRead for GatedReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.sent >= self.first {
            self.gate.first_sent.store(true, Ordering::SeqCst);
            if !self.gate.open.load(Ordering::SeqCst) {
                *self.gate.waker.lock().unwrap() = Some(cx.waker().clone());
                if !self.gate.open.load(Ordering::SeqCst) {
                    return std::task::Poll::Pending;
                }
            }
        }
        let limit = if self.sent < self.first { self.first } else { self.total };
        let n = buf.len().min(limit - self.sent);
        buf[..n].fill(b'x');
        self.sent += n;
        if self.sent == self.total {
            self.gate.finished.store(true, Ordering::SeqCst);
        }
        std::task::Poll::Ready(Ok(n))
    }
}

impl Drop for GatedReader {
    fn drop(&mut self) {
        self.gate.dropped.store(true, Ordering::SeqCst);
    }
}

/// Dropping an `execute_with_files` future while its body is being sent
/// aborts the request: the rest of the body is not sent (even once the
/// source could give it), the server sees a short body, and the statement
/// does not commit.
pub async fn a_dropped_upload_commits_nothing<R: Runtime>(b: &dyn Backend) {
    let client = root::<R>(b, &b.url());
    client
        .execute_query("CREATE NAMESPACE IF NOT EXISTS conf_drop_up")
        .await
        .expect("namespace");
    client
        .execute_query(
            "CREATE TABLE IF NOT EXISTS conf_drop_up.docs (id BIGINT PRIMARY KEY, f FILE) WITH (TYPE='USER')",
        )
        .await
        .expect("table");
    let gate = Arc::new(Gate::default());
    let reader = GatedReader {
        sent: 0,
        first: 256 * 1024,
        total: 1024 * 1024,
        gate: gate.clone(),
    };
    let call = client.execute_with_files(
        kalam_driver::prelude::QueryRequest::new(r#"INSERT INTO conf_drop_up.docs (id, f) VALUES (1, FILE("doc"))"#),
        vec![kalam_driver::prelude::FileUpload::from_reader(
            "doc",
            "half.bin",
            reader,
            1024 * 1024,
        )],
    );
    tokio::select! {
        r = call => panic!("the upload finished before its source allowed: {r:?}"),
        () = eventually("a quarter of the body sent", || gate.first_sent.load(Ordering::SeqCst)) => {}
    }
    // The caller is gone; now the source could give the rest.
    gate.open();
    eventually("the upload is cut short (its source dropped) or sent whole", || {
        gate.dropped.load(Ordering::SeqCst) || gate.finished.load(Ordering::SeqCst)
    })
    .await;
    assert!(
        !gate.finished.load(Ordering::SeqCst),
        "the rest of the body was sent after the caller gave up"
    );
    let r = client
        .execute_query("SELECT id FROM conf_drop_up.docs")
        .await
        .expect("select");
    assert_eq!(r.rows().count(), 0, "nothing committed");
}

/// The server drops change notifications under a burst, silently (the kit
/// reproduces it: every third here). A `LiveQuery` then misses rows;
/// `resync()` reads the table again and has them all, and later changes
/// keep coming.
pub async fn a_live_query_resyncs_what_the_server_dropped<R: Runtime>(b: &dyn Backend) {
    use crate::scenarios::PATIENCE;
    let client = root::<R>(b, &b.url());
    let table = setup_table(&client, "conf_resync").await;
    let mut live = client.live(&format!("SELECT * FROM {table}")).await.expect("live");
    for id in 1..=30 {
        client
            .execute_query(&format!("INSERT INTO {table} (id, name, qty) VALUES ({id}, 'r', {id})"))
            .await
            .expect("insert");
    }
    // Every third change was dropped: 20 of the 30 rows arrive.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while live.rows().len() < 20 {
        assert!(tokio::time::Instant::now() < deadline, "{} rows", live.rows().len());
        let _ = tokio::time::timeout(PATIENCE, live.next()).await.expect("a change");
    }
    assert_eq!(live.rows().len(), 20, "the dropped changes never come");
    let rows = live.resync().await.expect("resync");
    assert_eq!(rows.len(), 30, "a re-read has every row");
    client
        .execute_query(&format!("INSERT INTO {table} (id, name, qty) VALUES (31, 'after', 31)"))
        .await
        .expect("insert");
    let rows = tokio::time::timeout(PATIENCE, live.next())
        .await
        .expect("the change after the resync")
        .expect("not ended")
        .expect("no error");
    assert_eq!(rows.len(), 31);
}

/// A server (a bare one, on a thread of its own) answers a first query on
/// a kept-alive connection, then reads the second query on it and closes
/// without answering: what a server's idle timeout racing the request
/// looks like to the client. The caller gets the typed
/// `ClosedBeforeAnswer`, and the query is not sent again (the server may
/// have run it).
pub async fn a_kept_alive_connection_closed_unanswered_is_typed<R: Runtime>() {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    use std::sync::atomic::AtomicUsize;

    use kalam_proto::{Error, TransportError};

    const ONE: &str = r#"{"status":"success","results":[{"schema":[{"name":"x","data_type":"Int","index":0}],"rows":[[1]],"row_count":1}],"took":1.0}"#;

    /// Reads one request (head and `content-length` body); false at EOF.
    fn read_request(reader: &mut BufReader<std::net::TcpStream>) -> bool {
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return false;
            }
            let line = line.trim_end().to_ascii_lowercase();
            if line.is_empty() {
                break;
            }
            if let Some(v) = line.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).is_ok()
    }

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    std::thread::spawn(move || {
        // The first connection: one answer, then a request left unanswered.
        let (socket, _) = listener.accept().expect("accept");
        let mut reader = BufReader::new(socket.try_clone().expect("clone"));
        let mut writer = socket;
        assert!(read_request(&mut reader));
        seen.fetch_add(1, Ordering::SeqCst);
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{ONE}",
            ONE.len()
        );
        writer.write_all(answer.as_bytes()).expect("answer");
        assert!(read_request(&mut reader));
        seen.fetch_add(1, Ordering::SeqCst);
        let _ = writer.shutdown(std::net::Shutdown::Both);
        // Any later connection (a silent retry) is counted and answered.
        for socket in listener.incoming().flatten() {
            let mut reader = BufReader::new(socket.try_clone().expect("clone"));
            let mut writer = socket;
            while read_request(&mut reader) {
                seen.fetch_add(1, Ordering::SeqCst);
                let _ = writer.write_all(answer.as_bytes());
            }
        }
    });
    let client = crate::builder::<R>()
        .base_url(&url)
        .jwt_token("a.b.c")
        .build()
        .expect("client");
    client.execute_query("SELECT 1").await.expect("the first query");
    let error = client
        .execute_query("INSERT INTO t VALUES (1)")
        .await
        .expect_err("closed unanswered");
    assert!(
        matches!(error, Error::Transport(TransportError::ClosedBeforeAnswer)),
        "typed: {error:?}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 2, "not sent again");
    // The client goes on, on a new connection.
    client.execute_query("SELECT 1").await.expect("a new connection");
    assert_eq!(requests.load(Ordering::SeqCst), 3);
}

/// A call polled once and then kept, never polled again (its owner busy
/// elsewhere), stops no one: the driver's wake-ups it was handed go on to
/// the driver's task (on async-std, where a waiting caller may poll the
/// driver itself), so live events and other calls keep coming; and the
/// call still completes when its owner comes back to it.
pub async fn a_call_left_unpolled_stops_no_one<R: Runtime>(b: &dyn Backend) {
    let client = root::<R>(b, &b.url());
    let writer = root::<R>(b, &b.url());
    let table = setup_table(&client, "conf_unpolled").await;
    let mut events = client
        .live_events_with(&format!("SELECT * FROM {table}"), None)
        .await
        .expect("subscribe");
    let mut left = Box::pin(client.execute_query("SELECT 1"));
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    // (Where the caller drives the client, that poll can finish it.)
    let mut done = match left.as_mut().poll(&mut Context::from_waker(&Waker::from(flag))) {
        std::task::Poll::Ready(result) => Some(result),
        std::task::Poll::Pending => None,
    };
    // Its answer, and the socket, now wake the caller that never looks.
    writer
        .execute_query(&format!("INSERT INTO {table} (id, name, qty) VALUES (1, 'a', 1)"))
        .await
        .expect("insert");
    // (Within the scenarios' patience, or `next_event` fails.)
    while !matches!(
        crate::scenarios::next_event(&mut events).await,
        kalam_driver::prelude::LiveEvent::Insert { .. }
    ) {}
    // Another call on the same client goes on too.
    client.execute_query("SELECT 2").await.expect("another call");
    // And the one left alone completes when polled again.
    match done.take() {
        Some(result) => result.expect("the call left alone"),
        None => left.await.expect("the call left alone"),
    };
}
