//! The clock is fair (issue 8, finding 1): pages that are not touched again leave within one
//! budget's worth of new pages, whatever the eviction batch.

mod common;

use bufpool::PageId;
use bufpool::{Backing, Pool};
use common::{config, read_stamp, stamped_file};

/// Fills a budget of `frame_count` frames with pages 0..frame_count, reads as many new pages
/// without touching the first ones again, and returns how many of the first are still resident.
fn cold_pages_left(frame_count: u64, eviction_batch: usize) -> usize {
    let mut config = config(Backing::Anonymous, frame_count);
    config.eviction_batch = eviction_batch;
    let name = format!("clock-{frame_count}-{eviction_batch}");
    let pool = Pool::open(stamped_file(&name, 2 * frame_count), config).unwrap();
    for page in 0..2 * frame_count {
        read_stamp(&pool, page);
    }
    (0..frame_count)
        .filter(|&page| pool.frame_resident(PageId(page)).unwrap())
        .count()
}

#[test]
fn cold_pages_leave_within_one_budget_of_churn_at_every_batch() {
    for eviction_batch in 1..=64 {
        let left = cold_pages_left(128, eviction_batch);
        assert_eq!(
            left, 0,
            "batch {eviction_batch}: {left} of 128 cold pages resident"
        );
    }
}

#[test]
fn cold_pages_leave_a_large_budget_at_batch_8() {
    let left = cold_pages_left(4096, 8);
    assert_eq!(left, 0, "{left} of 4096 cold pages resident");
}
