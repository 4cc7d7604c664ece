//! Changing pages: `PageMut` (an exclusive latch that remembers the page as it was) and
//! `commit` (one log record for a set of pages changed together, a "mini-transaction").
//!
//! The first mutable access to a `PageMut` copies the page aside. `commit`, with every
//! latch of the change still held, diffs each page against its copy and appends one
//! record holding all of them (a full image on a page's first change since the last
//! checkpoint began, or for a new page; the changed byte ranges otherwise), then stamps
//! each page's LSN with the record's end. Only then are the latches released, so a page's
//! changes enter the log in the order they were made. A `PageMut` dropped without a commit
//! (an error in the middle of a change) puts its copy back: a change that is not in the
//! log never becomes visible, and a failed append (full disk) leaves nothing applied.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bufpool::{ExclusiveGuard, PageId};

use super::log::Log;
use super::record::{self, KIND_PAGES};
use crate::EngineError;
use crate::allocator::Allocator;
use crate::page::{self, PAGE_SIZE};

type PageCopy = Box<[u8; PAGE_SIZE]>;

/// Spare page copies kept per thread (no allocation per change in the steady state).
const SPARE_COPIES_MAX: usize = 16;

thread_local! {
    static SPARE_COPIES: RefCell<Vec<PageCopy>> = const { RefCell::new(Vec::new()) };
    static RECORD_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn take_copy(bytes: &[u8]) -> PageCopy {
    let mut copy = SPARE_COPIES
        .with(|spare| spare.borrow_mut().pop())
        .unwrap_or_else(|| Box::new([0u8; PAGE_SIZE]));
    copy.copy_from_slice(bytes);
    copy
}

fn give_back(copy: PageCopy) {
    SPARE_COPIES.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < SPARE_COPIES_MAX {
            spare.push(copy);
        }
    });
}

/// An exclusively latched page that is changed only through the log.
pub(crate) struct PageMut<'p> {
    guard: ExclusiveGuard<'p>,
    before: Option<PageCopy>,
    /// Freshly allocated: logged as a full image and an allocation; released back to the
    /// allocator if dropped uncommitted.
    allocated: Option<&'p Allocator>,
}

impl<'p> PageMut<'p> {
    pub fn new(guard: ExclusiveGuard<'p>) -> PageMut<'p> {
        PageMut {
            guard,
            before: None,
            allocated: None,
        }
    }

    pub fn allocated(guard: ExclusiveGuard<'p>, allocator: &'p Allocator) -> PageMut<'p> {
        PageMut {
            guard,
            before: None,
            allocated: Some(allocator),
        }
    }

    pub fn id(&self) -> PageId {
        self.guard.page_id()
    }

    /// For a new page that stays unreachable until a later commit (an overflow chain, a new
    /// tree's root): its bytes, to log with that commit, which also records its allocation.
    /// The latch is released; until then nobody else can reach the page.
    pub fn into_image(mut self) -> (PageId, Vec<u8>) {
        assert!(self.allocated.is_some(), "only a new page is logged later");
        self.allocated = None;
        if let Some(copy) = self.before.take() {
            give_back(copy);
        }
        (self.id(), self.guard.to_vec())
    }
}

impl PageMut<'_> {
    /// For a new page a bulk load writes without the log (it is written back and synced
    /// before the record that makes it reachable): its id; it stays handed out until that
    /// record lists it. Its LSN is zero, so its first logged change is a full image.
    pub fn into_unlogged(mut self) -> PageId {
        assert!(
            self.allocated.is_some(),
            "only a new page is written unlogged"
        );
        self.allocated = None;
        if let Some(copy) = self.before.take() {
            give_back(copy);
        }
        page::set_lsn(&mut self.guard, 0);
        self.id()
    }
}

impl Deref for PageMut<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.guard
    }
}

impl DerefMut for PageMut<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        if self.before.is_none() {
            self.before = Some(take_copy(&self.guard));
        }
        &mut self.guard
    }
}

impl Drop for PageMut<'_> {
    fn drop(&mut self) {
        if let Some(copy) = self.before.take() {
            // Uncommitted: the change never happened.
            self.guard.copy_from_slice(&copy[..]);
            give_back(copy);
        }
        if let Some(allocator) = self.allocated.take() {
            allocator.release(&[self.id()]);
        }
    }
}

/// What a change does besides its latched pages.
#[derive(Default)]
pub(crate) struct Change {
    /// New pages prepared earlier (`PageMut::into_image`), logged as full images and
    /// allocations.
    pub images: Vec<(PageId, Vec<u8>)>,
    /// New pages written without the log (a bulk load: already on disk and synced).
    pub allocated_unlogged: Vec<PageId>,
    /// Pages this change frees: returned to the allocator (epoch-deferred) with the record.
    pub freed: Vec<PageId>,
    /// The tree whose record count changes, and by how much.
    pub len_delta: Option<(PageId, i64)>,
}

/// Encodes the record of a change into `out`: which pages changed (to stamp), how many
/// full images, and the allocated ids.
fn build_record(
    out: &mut Vec<u8>,
    pages: &[&mut PageMut<'_>],
    change: &Change,
    threshold: u64,
) -> ([bool; 8], u64, Vec<PageId>) {
    let (root, delta) = change
        .len_delta
        .map_or((0, 0), |(root, delta)| (root.0, delta));
    let allocated: Vec<PageId> = change
        .allocated_unlogged
        .iter()
        .copied()
        .chain(change.images.iter().map(|(page, _)| *page))
        .chain(
            pages
                .iter()
                .filter(|page| page.allocated.is_some())
                .map(|page| page.id()),
        )
        .collect();
    record::begin(out, KIND_PAGES);
    let counts = record::begin_pages(out, root, delta, &change.freed, &allocated);
    let mut entries = 0u32;
    let mut images = 0u64;
    for (page, bytes) in &change.images {
        record::put_image(out, *page, bytes);
        entries += 1;
        images += 1;
    }
    let mut changed = [false; 8];
    assert!(
        pages.len() <= changed.len(),
        "a change latches at most 8 pages"
    );
    for (index, page) in pages.iter().enumerate() {
        let is_new = page.allocated.is_some();
        let logged = match &page.before {
            Some(before) => {
                // A page LSN is the end of its last change's record: at the threshold (the
                // redo point) that record lies wholly before it and is not replayed, so
                // this is the first change recovery sees and must be whole.
                let image = is_new || page::lsn_of(&before[..]) <= threshold;
                record::put_entry(out, page.id(), &before[..], &page.guard, image).or_else(|| {
                    is_new.then(|| record::put_image(out, page.id(), &page.guard))?;
                    Some(true)
                })
            }
            // A new page is always logged whole, changed or not.
            None if is_new => {
                record::put_image(out, page.id(), &page.guard);
                Some(true)
            }
            None => None,
        };
        if let Some(was_image) = logged {
            changed[index] = true;
            entries += 1;
            images += u64::from(was_image);
        }
    }
    record::set_pages_counts(out, counts, entries);
    (changed, images, allocated)
}

/// Logs the changes of `pages` (all latched by the caller) and of `change` as one record,
/// stamps the pages' LSNs and returns the record's end LSN. On error nothing was logged;
/// the caller's `PageMut`s then roll back when dropped.
pub(crate) fn commit(
    log: &Log,
    allocator: &Allocator,
    pages: &mut [&mut PageMut<'_>],
    change: Change,
) -> Result<u64, EngineError> {
    RECORD_SCRATCH.with(|scratch| {
        let mut out = scratch.borrow_mut();
        // The record is built before the log mutex is taken; if a checkpoint moved the
        // image threshold meanwhile, it is built again under the mutex (rare).
        let mut threshold = log.image_threshold();
        let (mut changed, mut images, mut allocated) =
            build_record(&mut out, pages, &change, threshold);
        let mut inner = log.lock();
        if log.image_threshold() != threshold {
            threshold = log.image_threshold();
            (changed, images, allocated) = build_record(&mut out, pages, &change, threshold);
        }
        let (root, delta) = change
            .len_delta
            .map_or((0, 0), |(root, delta)| (root.0, delta));
        let lsn = log.append_locked(&mut inner, &mut out)?;
        log.counters
            .page_images
            .fetch_add(images, Ordering::Relaxed);
        for (index, page) in pages.iter_mut().enumerate() {
            if changed[index] {
                page::set_lsn(&mut page.guard, lsn);
            }
            if let Some(copy) = page.before.take() {
                give_back(copy);
            }
            page.allocated = None;
        }
        if root != 0 {
            let len = inner
                .tree_lens
                .entry(root)
                .or_insert_with(|| Arc::new(AtomicU64::new(0)));
            len.fetch_add(delta as u64, Ordering::Relaxed);
        }
        allocator.committed(&allocated);
        if !change.freed.is_empty() {
            allocator.retire(&change.freed, &crossbeam_epoch::pin());
        }
        log.after_append(inner)?;
        Ok(lsn)
    })
}
