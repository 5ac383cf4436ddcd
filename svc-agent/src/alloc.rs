//! Id allocator for backend ids and rev-NAT ids. Ids are handed out in increasing order and
//! wrap around, so a freed id is reused as late as possible: conntrack entries still holding
//! an old id then find it absent (or, for backends, with another address) rather than
//! silently pointing at a new owner.
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("all {capacity} ids are in use")]
pub struct Exhausted {
    pub capacity: u32,
}

/// Allocates ids in 1..=max for values of type `T`; one id per distinct value.
#[derive(Debug, Clone)]
pub struct IdAllocator<T: Ord + Clone> {
    max: u32,
    next: u32,
    by_value: BTreeMap<T, u32>,
    used: BTreeSet<u32>,
}

impl<T: Ord + Clone> IdAllocator<T> {
    pub fn new(max: u32) -> Self {
        assert!(max >= 1);
        Self {
            max,
            next: 1,
            by_value: BTreeMap::new(),
            used: BTreeSet::new(),
        }
    }

    /// Records an id already present in the maps (adoption after a restart). Allocation
    /// continues after the highest adopted id.
    pub fn adopt(&mut self, value: T, id: u32) {
        if id == 0 || id > self.max || self.used.contains(&id) || self.by_value.contains_key(&value)
        {
            return;
        }
        self.by_value.insert(value, id);
        self.used.insert(id);
        if id >= self.next {
            self.next = if id == self.max { 1 } else { id + 1 };
        }
    }

    pub fn get(&self, value: &T) -> Option<u32> {
        self.by_value.get(value).copied()
    }

    /// The id of `value`, allocating one if it has none.
    pub fn get_or_alloc(&mut self, value: &T) -> Result<u32, Exhausted> {
        if let Some(id) = self.by_value.get(value) {
            return Ok(*id);
        }
        if self.used.len() as u64 >= self.max as u64 {
            return Err(Exhausted { capacity: self.max });
        }
        let mut id = self.next;
        while self.used.contains(&id) {
            id = if id == self.max { 1 } else { id + 1 };
        }
        self.next = if id == self.max { 1 } else { id + 1 };
        self.used.insert(id);
        self.by_value.insert(value.clone(), id);
        Ok(id)
    }

    pub fn release(&mut self, value: &T) -> Option<u32> {
        let id = self.by_value.remove(value)?;
        self.used.remove(&id);
        Some(id)
    }

    pub fn len(&self) -> usize {
        self.used.len()
    }

    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }

    pub fn values(&self) -> impl Iterator<Item = (&T, u32)> {
        self.by_value.iter().map(|(v, id)| (v, *id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_value_same_id() {
        let mut a = IdAllocator::new(10);
        let x = a.get_or_alloc(&"x").unwrap();
        assert_eq!(a.get_or_alloc(&"x").unwrap(), x);
        assert_ne!(a.get_or_alloc(&"y").unwrap(), x);
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn freed_ids_are_reused_last() {
        let mut a = IdAllocator::new(3);
        assert_eq!(a.get_or_alloc(&1).unwrap(), 1);
        assert_eq!(a.get_or_alloc(&2).unwrap(), 2);
        a.release(&1);
        // 3 is fresh, so it comes before the freed 1.
        assert_eq!(a.get_or_alloc(&3).unwrap(), 3);
        assert_eq!(a.get_or_alloc(&4).unwrap(), 1);
        assert_eq!(a.get_or_alloc(&5), Err(Exhausted { capacity: 3 }));
    }

    #[test]
    fn adoption_continues_after_highest_id() {
        let mut a = IdAllocator::new(100);
        a.adopt("a", 7);
        a.adopt("b", 3);
        a.adopt("dup-id", 7); // ignored: id in use
        a.adopt("zero", 0); // ignored: 0 is never an id
        assert_eq!(a.get(&"a"), Some(7));
        assert_eq!(a.get(&"dup-id"), None);
        assert_eq!(a.get_or_alloc(&"c").unwrap(), 8);
    }

    #[test]
    fn wraps_around_skipping_used() {
        let mut a = IdAllocator::new(3);
        a.adopt(10, 3);
        assert_eq!(a.get_or_alloc(&11).unwrap(), 1);
        assert_eq!(a.get_or_alloc(&12).unwrap(), 2);
        a.release(&11);
        assert_eq!(a.get_or_alloc(&13).unwrap(), 1);
    }
}
