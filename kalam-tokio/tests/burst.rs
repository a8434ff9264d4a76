//! A consumer that keeps up is never cut off, whatever the scheduler: a
//! null server sends 100,000 change frames to one subscription whose
//! consumer only counts them. And a consumer that sleeps still ends
//! lagging, without holding up the one beside it.

use kalam_bench::{count_a_flood, flood_beside_a_sleeper};
use kalam_tokio::Error;
use kalam_tokio::rt::Tokio;

#[tokio::test(flavor = "current_thread")]
async fn a_consumer_that_keeps_up_gets_every_frame_on_a_current_thread_runtime() {
    let (n, end) = count_a_flood::<Tokio>(100, 1000).await;
    assert_eq!((n, end.map(|e| e.to_string())), (100_000, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_keeps_up_gets_every_frame_on_a_multi_thread_runtime() {
    let (n, end) = count_a_flood::<Tokio>(100, 1000).await;
    assert_eq!((n, end.map(|e| e.to_string())), (100_000, None));
}

#[tokio::test(flavor = "current_thread")]
async fn a_sleeping_consumer_ends_lagging_and_the_other_gets_everything() {
    let (n, end) = flood_beside_a_sleeper::<Tokio>(20_000).await;
    assert_eq!(n, 20_000);
    assert!(matches!(end, Some(Error::SubscriptionLagged { .. })), "{end:?}");
}
