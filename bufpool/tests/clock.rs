//! The clock is fair (issue 8, finding 1): pages that are not touched again leave within two
//! budgets' worth of new pages, whatever the eviction batch (one budget when pages started
//! warm; a page a lookup faults in now starts cold, and new cold pages the hand reaches first
//! leave before old ones). And it keeps what is read again: a page read twice outlives a
//! budget of pages read once.

mod common;

use bufpool::PageId;
use bufpool::{Backing, Pool};
use common::{config, read_stamp, stamped_file};

/// Fills a budget of `frame_count` frames with pages 0..frame_count, reads `churn` budgets of
/// new pages without touching the first ones again, and returns how many of the first are
/// still resident.
fn cold_pages_left(frame_count: u64, eviction_batch: usize, churn: u64) -> usize {
    let mut config = config(Backing::Anonymous, frame_count);
    config.eviction_batch = eviction_batch;
    let name = format!("clock-{frame_count}-{eviction_batch}");
    let pages = (1 + churn) * frame_count;
    let pool = Pool::open(stamped_file(&name, pages), config).unwrap();
    for page in 0..pages {
        read_stamp(&pool, page);
    }
    (0..frame_count)
        .filter(|&page| pool.frame_resident(PageId(page)).unwrap())
        .count()
}

#[test]
fn cold_pages_leave_within_two_budgets_of_churn_at_every_batch() {
    for eviction_batch in 1..=64 {
        let left = cold_pages_left(128, eviction_batch, 2);
        assert_eq!(
            left, 0,
            "batch {eviction_batch}: {left} of 128 cold pages resident"
        );
    }
}

#[test]
fn cold_pages_leave_a_large_budget_at_batch_8() {
    let left = cold_pages_left(4096, 8, 2);
    assert_eq!(left, 0, "{left} of 4096 cold pages resident");
}

/// Fills a budget with pages read once, except every eighth, read twice; then reads a budget
/// of new pages once each. Returns (warm pages still resident, warm pages).
fn warm_pages_left(frame_count: u64, eviction_batch: usize) -> (usize, usize) {
    let mut config = config(Backing::Anonymous, frame_count);
    config.eviction_batch = eviction_batch;
    let name = format!("clock-warm-{frame_count}-{eviction_batch}");
    let pool = Pool::open(stamped_file(&name, 2 * frame_count), config).unwrap();
    let warm: Vec<u64> = (0..frame_count).step_by(8).collect();
    for page in 0..frame_count {
        read_stamp(&pool, page);
    }
    for &page in &warm {
        read_stamp(&pool, page);
    }
    for page in frame_count..2 * frame_count {
        read_stamp(&pool, page);
    }
    let left = warm
        .iter()
        .filter(|&&page| pool.frame_resident(PageId(page)).unwrap())
        .count();
    (left, warm.len())
}

#[test]
fn pages_read_again_outlive_a_budget_of_pages_read_once() {
    for eviction_batch in [1, 8, 32, 64] {
        let (left, warm) = warm_pages_left(1024, eviction_batch);
        assert_eq!(
            left, warm,
            "batch {eviction_batch}: only {left} of {warm} pages read twice are resident"
        );
    }
}

#[test]
fn a_prefetched_page_read_once_unwarmed_stays_cold() {
    // Half a budget prefetched and read once the way a batched lookup reads it, half read
    // twice the ordinary way; then half a budget of new pages read once. The prefetched
    // pages are as cold as the new ones and leave first: every page read twice stays.
    let frame_count = 1024;
    let half = frame_count / 2;
    let pool = Pool::open(
        stamped_file("clock-prefetch", 2 * frame_count),
        config(Backing::Anonymous, frame_count),
    )
    .unwrap();
    let prefetched: Vec<PageId> = (0..half).map(PageId).collect();
    pool.prefetch(&prefetched).unwrap();
    for &page in &prefetched {
        let guard = pool.optimistic_unwarmed(page).unwrap();
        assert_eq!(guard.peek(|view| view.u64_at(0)), page.0);
        guard.validate().unwrap();
    }
    for page in half..frame_count {
        read_stamp(&pool, page);
        read_stamp(&pool, page);
    }
    for page in frame_count..frame_count + half {
        read_stamp(&pool, page);
    }
    let warm_left = (half..frame_count)
        .filter(|&page| pool.frame_resident(PageId(page)).unwrap())
        .count();
    assert_eq!(
        warm_left, half as usize,
        "pages read twice were evicted before prefetched pages read once"
    );
}
