//! Per-resource locks: two mutations of one resource never interleave, and mutations of
//! different resources never wait on each other. Reads take no lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// A table of named async locks.
#[derive(Debug, Default)]
pub struct Locks {
    table: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held locks; released on drop.
#[derive(Debug)]
pub struct Guards(#[allow(dead_code)] Vec<OwnedMutexGuard<()>>);

impl Locks {
    /// Acquire every key, in sorted order so that two callers never deadlock.
    pub async fn acquire(&self, mut keys: Vec<String>) -> Guards {
        keys.sort();
        keys.dedup();
        let mutexes: Vec<_> = {
            let mut table = self
                .table
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Forget locks nobody holds or waits for.
            table.retain(|_, m| Arc::strong_count(m) > 1);
            keys.iter()
                .map(|k| Arc::clone(table.entry(k.clone()).or_default()))
                .collect()
        };
        let mut guards = Vec::with_capacity(mutexes.len());
        for m in mutexes {
            guards.push(m.lock_owned().await);
        }
        Guards(guards)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn same_key_waits_other_key_does_not() {
        let locks = Arc::new(Locks::default());
        let held = locks.acquire(vec!["tank/a".into()]).await;
        let other = tokio::time::timeout(
            Duration::from_millis(100),
            locks.acquire(vec!["tank/b".into()]),
        )
        .await;
        assert!(other.is_ok(), "a different key must not wait");
        let l2 = Arc::clone(&locks);
        let same = tokio::spawn(async move { l2.acquire(vec!["tank/a".into()]).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!same.is_finished(), "the same key must wait");
        drop(held);
        tokio::time::timeout(Duration::from_secs(1), same)
            .await
            .expect("acquired after release")
            .expect("task");
    }
}
