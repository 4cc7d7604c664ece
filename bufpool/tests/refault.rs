//! The refault race, forced: a reader touches a victim's address between shoot-down and
//! clear-uptodate (as a stale optimistic reader or an exported view would). The retry loop
//! must fire, count it, and leave no frame behind; a reader that keeps touching makes the loop
//! hit its bound, and a later round frees the frame.

mod common;

use std::sync::{Arc, Mutex};

use bufpool::eviction::{EvictionProbe, REFAULT_RETRIES_MAX, Step};
use bufpool::{Backing, PageId, PageView, Pool};
use common::{BACKINGS, config, read_stamp, stamped_file};

/// Touches the first victim it sees after its shoot-down, `touches` times at most.
struct Toucher {
    victim: Mutex<Option<PageId>>,
    touches_left: Mutex<u32>,
}

impl EvictionProbe for Toucher {
    fn after_step(&self, page: PageId, step: Step, bytes: &PageView<'_>) {
        if step != Step::ShootDown {
            return;
        }
        let mut victim = self.victim.lock().unwrap();
        if victim.get_or_insert(page) != &page {
            return;
        }
        let mut touches_left = self.touches_left.lock().unwrap();
        if *touches_left > 0 {
            *touches_left -= 1;
            // The touch: a read of the evicted address instantiates a frame again.
            std::hint::black_box(bytes.u64_at(0));
        }
    }
}

fn pool_with_toucher(name: &str, backing: Backing, touches: u32) -> (Pool, Arc<Toucher>) {
    let toucher = Arc::new(Toucher {
        victim: Mutex::new(None),
        touches_left: Mutex::new(touches),
    });
    let mut config = config(backing, 16);
    config.eviction_probe = Some(toucher.clone());
    (Pool::open(stamped_file(name, 64), config).unwrap(), toucher)
}

#[test]
fn refault_between_shootdown_and_clear_is_shot_down_again() {
    for backing in BACKINGS {
        let (pool, toucher) = pool_with_toucher(&format!("refault-{backing:?}"), backing, 1);
        for page in 0..17 {
            read_stamp(&pool, page);
        }
        let victim = toucher.victim.lock().unwrap().expect("an eviction ran");
        let stats = pool.stats();
        assert_eq!(stats.refault_retries, 1, "{backing:?}: {stats:?}");
        assert_eq!(
            stats.shootdowns,
            stats.evictions + 1,
            "{backing:?}: {stats:?}"
        );
        assert!(
            !pool.frame_resident(victim).unwrap(),
            "{backing:?}: frame left behind"
        );
        // The victim reads back correctly from disk.
        assert_eq!(read_stamp(&pool, victim.0), (victim.0, 0));
    }
}

#[test]
fn a_reader_that_keeps_refaulting_hits_the_bound_and_the_frame_is_freed_later() {
    let (pool, toucher) = pool_with_toucher("refault-bound", Backing::Memfd, u32::MAX);
    for page in 0..17 {
        read_stamp(&pool, page);
    }
    let victim = toucher.victim.lock().unwrap().expect("an eviction ran");
    let stats = pool.stats();
    assert_eq!(
        stats.refault_retries,
        u64::from(REFAULT_RETRIES_MAX),
        "{stats:?}"
    );
    assert!(
        pool.frame_resident(victim).unwrap(),
        "the bound was hit with a frame instantiated"
    );
    // Still charged: the budget stays honest about the stray frame.
    let charged = stats.reads - stats.evictions + 1;
    assert_eq!(stats.resident_bytes, charged * 4096, "{stats:?}");
    *toucher.touches_left.lock().unwrap() = 0;
    for page in 17..40 {
        read_stamp(&pool, page);
    }
    assert!(
        !pool.frame_resident(victim).unwrap(),
        "the re-check freed the stray frame"
    );
    assert_eq!(read_stamp(&pool, victim.0), (victim.0, 0));
}
