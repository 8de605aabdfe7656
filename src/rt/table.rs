//! A shard's table of the services it owns: a slab that planned probes index directly, plus
//! an index by id for the API and config reconciliation.
//!
//! Why a slab and not a map by id: at 100k+ services, starting a due probe and applying its
//! result were bound by cache misses, and a hash lookup costs two of them (control bytes, then
//! the entry) where an index costs one. A planned entry (`sched::Due`) carries its `SlotId`, so
//! the hot path reads the entry directly, and `prefetch` lets the scheduler warm the next
//! entry's slot while it starts the current one. Freed slots are reused; whoever holds a
//! `SlotId` must check that the slot still holds what it expects (the shard compares
//! generations and ids).

use rustc_hash::FxHashMap as HashMap;

use crate::model::ServiceId;

/// Position of a service in its shard's table (valid until the service is removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotId(u32);

impl SlotId {
    /// A slot number, for tests and benchmarks that plan entries without a table.
    pub fn new(n: u32) -> Self {
        SlotId(n)
    }

    /// The slot number.
    pub fn get(self) -> u32 {
        self.0
    }

    fn index(self) -> usize {
        self.0 as usize
    }
}

/// Services by slot, with an index by id.
pub struct Table<V> {
    slots: Vec<Option<V>>,
    free: Vec<SlotId>,
    by_id: HashMap<ServiceId, SlotId>,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Table {
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::default(),
        }
    }
}

impl<V> Table<V> {
    /// Adds `v` as the entry of `id` (replacing an existing one in place) and returns its slot.
    pub fn insert(&mut self, id: ServiceId, v: V) -> SlotId {
        if let Some(&at) = self.by_id.get(&id) {
            if let Some(entry) = self.slots.get_mut(at.index()) {
                *entry = Some(v);
                return at;
            }
        }
        let at = match self.free.pop() {
            Some(at) => {
                if let Some(entry) = self.slots.get_mut(at.index()) {
                    *entry = Some(v);
                }
                at
            }
            None => {
                // 4 billion services on one shard is far past any memory this runs in.
                let at = SlotId(u32::try_from(self.slots.len()).unwrap_or(u32::MAX));
                self.slots.push(Some(v));
                at
            }
        };
        self.by_id.insert(id, at);
        at
    }

    /// The slot of `id`.
    pub fn slot_of(&self, id: ServiceId) -> Option<SlotId> {
        self.by_id.get(&id).copied()
    }

    /// The entry of `id`.
    pub fn get(&self, id: ServiceId) -> Option<&V> {
        self.at(self.slot_of(id)?)
    }

    /// Whatever occupies `at` now (maybe not the service it was handed out for).
    pub fn at(&self, at: SlotId) -> Option<&V> {
        self.slots.get(at.index())?.as_ref()
    }

    /// Whatever occupies `at` now, mutably.
    pub fn at_mut(&mut self, at: SlotId) -> Option<&mut V> {
        self.slots.get_mut(at.index())?.as_mut()
    }

    /// Removes the entry of `id`; its slot is reused by a later insert.
    pub fn remove(&mut self, id: ServiceId) -> Option<V> {
        let at = self.by_id.remove(&id)?;
        let v = self.slots.get_mut(at.index())?.take();
        self.free.push(at);
        v
    }

    /// Every entry, in slot order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.slots.iter().flatten()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when the table holds nothing.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Hints the CPU to start loading slot `at` (no effect on results).
    #[inline]
    pub fn prefetch(&self, at: SlotId) {
        if let Some(entry) = self.slots.get(at.index()) {
            prefetch_read(entry);
        }
    }
}

/// Starts loading the cache line holding `v`; the pointer is only a hint, never dereferenced.
#[inline]
pub fn prefetch_read<T>(v: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: `_mm_prefetch` does not access memory architecturally (it cannot fault);
        // the pointer comes from a live reference anyway. SSE is part of the x86_64 baseline.
        #[allow(unused_unsafe)]
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>((v as *const T).cast::<i8>())
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: &str) -> ServiceId {
        ServiceId::from_name(n)
    }

    #[test]
    fn slots_are_stable_reused_after_removal_and_indexed_by_id() {
        let mut t = Table::default();
        let a = t.insert(id("a"), 1);
        let b = t.insert(id("b"), 2);
        assert_ne!(a, b);
        assert_eq!((t.get(id("a")), t.at(b), t.len()), (Some(&1), Some(&2), 2));
        // Replacing keeps the slot.
        assert_eq!(t.insert(id("a"), 10), a);
        assert_eq!(t.at(a), Some(&10));
        if let Some(v) = t.slot_of(id("b")).and_then(|at| t.at_mut(at)) {
            *v += 1;
        }
        assert_eq!(t.at_mut(b).copied(), Some(3));
        assert_eq!(t.remove(id("a")), Some(10));
        assert_eq!((t.at(a), t.get(id("a")), t.len()), (None, None, 1));
        assert_eq!(t.remove(id("a")), None);
        // The freed slot goes to the next service: a stale SlotId now sees the newcomer,
        // which is why holders check what they find.
        let c = t.insert(id("c"), 4);
        assert_eq!(c, a);
        assert_eq!(t.slot_of(id("c")), Some(a));
        assert_eq!(t.values().copied().collect::<Vec<_>>(), vec![4, 3]);
        t.prefetch(c);
        t.prefetch(SlotId::new(99));
        assert!(!t.is_empty());
        assert_eq!(t.at(SlotId::new(99)), None);
    }
}
