//! In-memory per-node locks (Ironic's node reservation, for a single conductor).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

/// The set of nodes currently locked by this conductor.
#[derive(Debug, Clone, Default)]
pub struct NodeLocks {
    held: Arc<Mutex<HashSet<String>>>,
}

/// A held lock on one node; released when dropped.
#[derive(Debug)]
pub struct NodeLock {
    uuid: String,
    locks: NodeLocks,
}

impl NodeLocks {
    /// Takes the lock on `uuid` without waiting; `None` when someone holds it.
    pub fn try_lock(&self, uuid: &str) -> Option<NodeLock> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.insert(uuid.to_owned()) {
            Some(NodeLock {
                uuid: uuid.to_owned(),
                locks: self.clone(),
            })
        } else {
            None
        }
    }

    /// Whether `uuid` is locked.
    pub fn is_locked(&self, uuid: &str) -> bool {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(uuid)
    }
}

impl NodeLock {
    /// The locked node.
    pub fn uuid(&self) -> &str {
        &self.uuid
    }
}

impl Drop for NodeLock {
    fn drop(&mut self) {
        self.locks
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.uuid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_exclusive_until_dropped() {
        let locks = NodeLocks::default();
        let first = locks.try_lock("n").unwrap();
        assert!(locks.try_lock("n").is_none());
        assert!(locks.is_locked("n"));
        assert!(locks.try_lock("m").is_some());
        drop(first);
        assert!(!locks.is_locked("n"));
        assert!(locks.try_lock("n").is_some());
    }
}
