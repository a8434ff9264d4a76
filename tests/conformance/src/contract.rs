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
    for i in 0..12 {
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let sql = format!("SELECT * FROM {table} WHERE id = {i}");
        let mut call = Box::pin(client.live_events_with(&sql, None));
        assert!(call.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
        // Woken: the acknowledgement is in; the caller gives up without
        // polling again.
        eventually("the subscription's answer", || flag.0.load(Ordering::SeqCst)).await;
        drop(call);
    }
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
