//! [`Interner`]: one shared copy of each string that many objects repeat (label keys and values,
//! namespace and node names), so that a large cluster holds each once.
//!
//! An interner belongs to whoever holds the objects (the [`crate::ClusterState`]): nothing is
//! global, and dropping the holder frees its strings.

use std::collections::HashSet;
use std::sync::Arc;

/// The shared copies of strings.
#[derive(Debug, Clone, Default)]
pub struct Interner {
    strings: HashSet<Arc<str>>,
    /// How many strings were held after the last [`Interner::prune`] (at least a floor), so that
    /// pruning costs a constant per string interned.
    pruned_at: usize,
}

/// Below this many strings the interner does not prune.
const PRUNE_FLOOR: usize = 1024;

impl Interner {
    /// An empty interner.
    pub fn new() -> Self {
        Self::default()
    }

    /// The shared copy of `s` (made from `s` if there is none yet).
    pub fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(s) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(s);
        self.insert(Arc::clone(&shared));
        shared
    }

    /// Makes `s` the shared copy of its text (`s` itself becomes the shared copy if there is none).
    pub fn share(&mut self, s: &mut Arc<str>) {
        match self.strings.get(&**s) {
            Some(shared) => {
                if !Arc::ptr_eq(shared, s) {
                    *s = Arc::clone(shared);
                }
            }
            None => self.insert(Arc::clone(s)),
        }
    }

    fn insert(&mut self, s: Arc<str>) {
        self.strings.insert(s);
        if self.strings.len() > 2 * self.pruned_at.max(PRUNE_FLOOR) {
            self.prune();
        }
    }

    /// Forgets the strings that only the interner still holds.
    pub fn prune(&mut self) {
        self.strings.retain(|s| Arc::strong_count(s) > 1);
        self.strings.shrink_to_fit();
        self.pruned_at = self.strings.len();
    }

    /// How many strings it holds.
    pub fn len(&self) -> usize {
        self.strings.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_become_one_allocation() {
        let mut interner = Interner::new();
        let mut a: Arc<str> = Arc::from("app");
        let mut b: Arc<str> = Arc::from(String::from("app"));
        assert!(!Arc::ptr_eq(&a, &b));
        interner.share(&mut a);
        interner.share(&mut b);
        assert!(Arc::ptr_eq(&a, &b), "the second is replaced by the first");
        assert!(Arc::ptr_eq(&interner.intern("app"), &a));
        assert_eq!(interner.len(), 1);
        let mut other: Arc<str> = Arc::from("web");
        interner.share(&mut other);
        assert_eq!(interner.len(), 2);
        assert!(!Arc::ptr_eq(&other, &a));
    }

    #[test]
    fn pruning_forgets_only_strings_nobody_else_holds() {
        let mut interner = Interner::new();
        let kept = interner.intern("kept");
        drop(interner.intern("dropped"));
        interner.prune();
        assert_eq!(interner.len(), 1);
        assert!(Arc::ptr_eq(&interner.intern("kept"), &kept));
    }

    #[test]
    fn growth_prunes_what_is_no_longer_used() {
        let mut interner = Interner::new();
        for i in 0..10 * PRUNE_FLOOR {
            drop(interner.intern(&format!("pod-{i}")));
        }
        assert!(
            interner.len() <= 2 * PRUNE_FLOOR + 1,
            "strings nobody holds do not pile up: {}",
            interner.len()
        );
    }
}
