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
