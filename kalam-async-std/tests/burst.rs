//! A consumer that keeps up is never cut off: a null server sends 100,000
//! change frames to one subscription whose consumer only counts them. And a
//! consumer that sleeps still ends lagging, without holding up the other.

use kalam_async_std::Error;
use kalam_async_std::rt::AsyncStd;
use kalam_bench::{count_a_flood, flood_beside_a_sleeper};

#[test]
fn a_consumer_that_keeps_up_gets_every_frame() {
    let (n, end) = async_std::task::block_on(count_a_flood::<AsyncStd>(100, 1000));
    assert_eq!((n, end.map(|e| e.to_string())), (100_000, None));
}

#[test]
fn a_sleeping_consumer_ends_lagging_and_the_other_gets_everything() {
    let (n, end) = async_std::task::block_on(flood_beside_a_sleeper::<AsyncStd>(20_000));
    assert_eq!(n, 20_000);
    assert!(matches!(end, Some(Error::SubscriptionLagged { .. })), "{end:?}");
}
