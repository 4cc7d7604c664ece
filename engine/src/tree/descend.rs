//! Finding the node for a key: optimistic lock coupling, with latched fallbacks.
//!
//! Optimistic descent reads each node through a `PageView` and trusts nothing it read
//! until the node's version validates: a child page id is only followed after the parent
//! validated, and the parent is validated again after the child's version was taken, so
//! the child was the parent's child at that moment. Any conflict is a [`Abort::Restart`].
//! After [`OPTIMISTIC_ATTEMPTS_MAX`] restarts a caller falls back to latch coupling, which
//! cannot restart, so every operation finishes.

use bufpool::{ExclusiveGuard, OptimisticGuard, PageId, Restart, SharedGuard};

use crate::EngineError;
use crate::node;
use crate::page::{KIND_OFFSET, PageBytes, PageKind};
use crate::shared::Shared;

/// Optimistic tries of one operation before it takes latches instead.
pub(crate) const OPTIMISTIC_ATTEMPTS_MAX: u32 = 32;
/// No tree is deeper (each inner level at least doubles the fan-out below it).
pub(crate) const HEIGHT_MAX: usize = 40;

/// Why an optimistic attempt stopped.
#[derive(Debug)]
pub(crate) enum Abort {
    Restart,
    Failed(EngineError),
}

impl From<Restart> for Abort {
    fn from(_: Restart) -> Abort {
        Abort::Restart
    }
}

impl From<bufpool::PoolError> for Abort {
    fn from(error: bufpool::PoolError) -> Abort {
        Abort::Failed(error.into())
    }
}

impl From<EngineError> for Abort {
    fn from(error: EngineError) -> Abort {
        Abort::Failed(error)
    }
}

/// A tree as the internal functions see it.
#[derive(Clone, Copy)]
pub(crate) struct TreeCtx<'a> {
    pub shared: &'a Shared,
    pub root: PageId,
}

/// Which child to follow at each inner level.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Route<'k> {
    /// The child holding this key.
    Key(&'k [u8]),
    /// The child holding the largest key below this one.
    Before(&'k [u8]),
    /// The rightmost child.
    Last,
}

impl Route<'_> {
    #[inline]
    pub(crate) fn index<P: PageBytes + ?Sized>(&self, page: &P) -> usize {
        match *self {
            Route::Key(key) => node::child_index(page, key),
            Route::Before(key) => node::child_index_before(page, key),
            Route::Last => node::count(page),
        }
    }
}

/// One side of a node's key range: a separator key, or unbounded. Keeps its buffer when
/// cleared, so a scan that moves from leaf to leaf does not allocate.
#[derive(Debug, Default)]
pub(crate) struct Fence {
    key: Vec<u8>,
    bounded: bool,
}

impl Fence {
    pub fn get(&self) -> Option<&[u8]> {
        self.bounded.then_some(self.key.as_slice())
    }

    fn clear(&mut self) {
        self.bounded = false;
    }

    fn set_from<P: PageBytes + ?Sized>(&mut self, page: &P, index: usize) {
        node::copy_key(page, index, &mut self.key);
        self.bounded = true;
    }

    fn copy_from(&mut self, other: &Fence) {
        self.key.clear();
        self.key.extend_from_slice(&other.key);
        self.bounded = other.bounded;
    }
}

/// The tightest separators around the node a descent reached: its keys are `>= lower`
/// and `< upper`.
#[derive(Debug, Default)]
pub(crate) struct Fences {
    pub lower: Fence,
    pub upper: Fence,
}

impl Fences {
    pub fn clear(&mut self) {
        self.lower.clear();
        self.upper.clear();
    }

    pub fn copy_from(&mut self, other: &Fences) {
        self.lower.copy_from(&other.lower);
        self.upper.copy_from(&other.upper);
    }

    /// Narrows the fences to child `index` of the inner node `page`.
    pub fn record<P: PageBytes + ?Sized>(&mut self, page: &P, index: usize) {
        let count = node::count(page);
        if index < count {
            self.upper.set_from(page, index);
        }
        if index > 0 {
            self.lower.set_from(page, index.min(count) - 1);
        }
    }
}

struct Step {
    kind: u8,
    level: u16,
    child: PageId,
}

/// Descends optimistically until a leaf or a node at `stop_level`; returns it with its
/// version taken (validated once). With `fences`, records the separators around the path.
pub(crate) fn descend<'p>(
    tree: TreeCtx<'p>,
    route: Route<'_>,
    stop_level: u16,
    fences: Option<&mut Fences>,
) -> Result<OptimisticGuard<'p>, Abort> {
    descend_warming(tree, route, stop_level, fences, Warming::Warm)
}

/// Whether a descent's reads count as accesses for the clock (see `Pool::optimistic_unwarmed`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Warming {
    /// An ordinary read: a cold page on the way is warmed.
    Warm,
    /// The read that follows a prefetch of the leaf, whose fault-in was the access: pages
    /// keep their temperature (inner nodes stay warm from every other descent).
    Unwarmed,
}

/// `descend`, its reads warming the pages or not as `warming` says.
pub(crate) fn descend_warming<'p>(
    tree: TreeCtx<'p>,
    route: Route<'_>,
    stop_level: u16,
    fences: Option<&mut Fences>,
    warming: Warming,
) -> Result<OptimisticGuard<'p>, Abort> {
    let pool = &tree.shared.pool;
    let reached = descend_through(tree, route, stop_level, fences, |page| match warming {
        Warming::Warm => pool.optimistic(page).map(Some),
        Warming::Unwarmed => pool.optimistic_unwarmed(page).map(Some),
    })?;
    Ok(reached.expect("an optimistic read always gives a guard"))
}

/// `descend` that never waits for a latch nor faults a page in: `None` as soon as a node on
/// the way is not readable right now (see `Pool::try_optimistic`).
pub(crate) fn descend_nowait<'p>(
    tree: TreeCtx<'p>,
    route: Route<'_>,
    stop_level: u16,
) -> Result<Option<OptimisticGuard<'p>>, Abort> {
    let pool = &tree.shared.pool;
    descend_through(tree, route, stop_level, None, |page| {
        pool.try_optimistic(page)
    })
}

/// The descent, taking each node's version through `take` (`None`: stop, nothing reached).
fn descend_through<'p>(
    tree: TreeCtx<'p>,
    route: Route<'_>,
    stop_level: u16,
    mut fences: Option<&mut Fences>,
    take: impl Fn(PageId) -> Result<Option<OptimisticGuard<'p>>, bufpool::PoolError>,
) -> Result<Option<OptimisticGuard<'p>>, Abort> {
    if let Some(fences) = fences.as_deref_mut() {
        fences.clear();
    }
    let Some(mut current) = take(tree.root)? else {
        return Ok(None);
    };
    for _ in 0..HEIGHT_MAX {
        let step = current.peek(|view| {
            let kind = view.u8_at(KIND_OFFSET);
            let level = node::level(view);
            if kind != PageKind::Inner as u8 || level <= stop_level {
                return Step {
                    kind,
                    level,
                    child: PageId(0),
                };
            }
            let index = route.index(view);
            if let Some(fences) = fences.as_deref_mut() {
                fences.record(view, index);
            }
            Step {
                kind,
                level,
                child: node::child_at(view, index),
            }
        });
        match PageKind::from_byte(step.kind) {
            // The caller validates after reading the node.
            Some(PageKind::Leaf) => return Ok(Some(current)),
            Some(PageKind::Inner) if step.level <= stop_level => return Ok(Some(current)),
            Some(PageKind::Inner) => current.validate()?,
            _ => {
                current.validate()?;
                return Err(not_a_node(tree.shared, current.page_id()).into());
            }
        }
        let Some(child) = take(step.child)? else {
            return Ok(None);
        };
        current.validate()?;
        current = child;
    }
    Err(too_deep(tree).into())
}

pub(crate) fn not_a_node(shared: &Shared, page: PageId) -> EngineError {
    shared.corrupted(page, "a tree points at a page that is not a tree node")
}

fn too_deep(tree: TreeCtx<'_>) -> EngineError {
    tree.shared
        .corrupted(tree.root, format!("tree deeper than {HEIGHT_MAX} levels"))
}

fn check_node(shared: &Shared, page: PageId, bytes: &[u8]) -> Result<bool, EngineError> {
    match crate::page::kind_of(bytes) {
        Some(PageKind::Leaf) => Ok(true),
        Some(PageKind::Inner) => Ok(false),
        _ => Err(not_a_node(shared, page)),
    }
}

/// Shared-latch coupling down to the leaf on `route` (the fallback of readers).
pub(crate) fn descend_shared<'p>(
    tree: TreeCtx<'p>,
    route: Route<'_>,
    mut fences: Option<&mut Fences>,
) -> Result<SharedGuard<'p>, EngineError> {
    let pool = &tree.shared.pool;
    if let Some(fences) = fences.as_deref_mut() {
        fences.clear();
    }
    let mut current = pool.shared(tree.root)?;
    for _ in 0..HEIGHT_MAX {
        if check_node(tree.shared, current.page_id(), &current)? {
            return Ok(current);
        }
        let index = route.index(&current[..]);
        if let Some(fences) = fences.as_deref_mut() {
            fences.record(&current[..], index);
        }
        let child = node::child_at(&current[..], index);
        current = pool.shared(child)?;
    }
    Err(too_deep(tree))
}

/// Exclusive-latch coupling down to the leaf holding `key` (the fallback of writers).
pub(crate) fn descend_exclusive<'p>(
    tree: TreeCtx<'p>,
    key: &[u8],
) -> Result<ExclusiveGuard<'p>, EngineError> {
    let pool = &tree.shared.pool;
    let mut current = pool.exclusive(tree.root)?;
    for _ in 0..HEIGHT_MAX {
        if check_node(tree.shared, current.page_id(), &current)? {
            return Ok(current);
        }
        let child = node::child_at(&current[..], node::child_index(&current[..], key));
        current = pool.exclusive(child)?;
    }
    Err(too_deep(tree))
}

/// A node and its parent (`None` for the root), versions taken.
pub(crate) type WithParent<'p> = (Option<OptimisticGuard<'p>>, OptimisticGuard<'p>);

/// Finds `target` on the path of `key`: returns (parent, target) with versions taken, or
/// `None` if the path no longer leads through `target` (someone else split or merged it).
pub(crate) fn find_with_parent<'p>(
    tree: TreeCtx<'p>,
    target: PageId,
    key: &[u8],
) -> Result<Option<WithParent<'p>>, Abort> {
    let pool = &tree.shared.pool;
    let mut parent: Option<OptimisticGuard<'p>> = None;
    let mut current = pool.optimistic(tree.root)?;
    for _ in 0..HEIGHT_MAX {
        if current.page_id() == target {
            return Ok(Some((parent, current)));
        }
        let step = current.peek(|view| {
            let kind = view.u8_at(KIND_OFFSET);
            let child = if kind == PageKind::Inner as u8 {
                node::child_at(view, node::child_index(view, key))
            } else {
                PageId(0)
            };
            Step {
                kind,
                level: 0,
                child,
            }
        });
        current.validate()?;
        match PageKind::from_byte(step.kind) {
            Some(PageKind::Leaf) => return Ok(None),
            Some(PageKind::Inner) => {}
            _ => return Err(not_a_node(tree.shared, current.page_id()).into()),
        }
        let child = pool.optimistic(step.child)?;
        current.validate()?;
        parent = Some(std::mem::replace(&mut current, child));
    }
    Err(too_deep(tree).into())
}
