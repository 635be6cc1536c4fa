//! Shared state that a panicking holder cannot wedge: the daemon's one poison-tolerant lock
//! helper, counted holds on a key (leases) and exclusive slots (one piece of work per key).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// Locks `m`, taking the data even when a thread panicked while holding it: every critical
/// section in kilnd leaves its data consistent at each step, so a panic elsewhere must not
/// stop every later build, request or cleanup.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How many holders each key has (e.g. builds reading an image); a key is held while any of
/// its [`Hold`]s lives.
#[derive(Debug, Default, Clone)]
pub struct Holds(Arc<Mutex<HashMap<String, usize>>>);

impl Holds {
    /// Counts one more holder of `key` until the returned hold is dropped.
    pub fn hold(&self, key: &str) -> Hold {
        *lock(&self.0).entry(key.to_owned()).or_default() += 1;
        Hold {
            holds: self.0.clone(),
            key: key.to_owned(),
        }
    }

    /// How many holds on `key` live now.
    pub fn count(&self, key: &str) -> usize {
        lock(&self.0).get(key).copied().unwrap_or(0)
    }
}

/// One holder of a key of [`Holds`]; dropping it releases the key.
#[derive(Debug)]
pub struct Hold {
    holds: Arc<Mutex<HashMap<String, usize>>>,
    key: String,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut holds = lock(&self.holds);
        if let Some(n) = holds.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                holds.remove(&self.key);
            }
        }
    }
}

/// Keys at most one piece of work may have at a time (e.g. an OS being bootstrapped).
#[derive(Debug, Default)]
pub struct Slots(Mutex<HashSet<String>>);

impl Slots {
    /// The slot of `key`, or `None` while another piece of work has it.
    pub fn take(&self, key: &str) -> Option<Slot<'_>> {
        lock(&self.0).insert(key.to_owned()).then(|| Slot {
            slots: self,
            key: key.to_owned(),
        })
    }
}

/// A key taken from [`Slots`]; dropping it frees the key.
#[derive(Debug)]
pub struct Slot<'a> {
    slots: &'a Slots,
    key: String,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        lock(&self.slots.0).remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_count_until_dropped() {
        let holds = Holds::default();
        let a = holds.hold("img-1");
        let b = holds.hold("img-1");
        assert_eq!((holds.count("img-1"), holds.count("img-2")), (2, 0));
        drop(a);
        assert_eq!(holds.count("img-1"), 1);
        drop(b);
        assert_eq!(holds.count("img-1"), 0);
        assert!(lock(&holds.0).is_empty(), "no key is left behind");
    }

    #[test]
    fn a_slot_has_one_holder() {
        let slots = Slots::default();
        let first = slots.take("debian-12");
        assert!(first.is_some());
        assert!(slots.take("debian-12").is_none());
        assert!(slots.take("ubuntu-24.04").is_some());
        drop(first);
        assert!(slots.take("debian-12").is_some());
    }

    #[test]
    fn a_poisoned_lock_still_opens() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let held = m.clone();
        let _ = std::thread::spawn(move || {
            let _guard = held.lock();
            panic!("poisoning the lock on purpose");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }
}
