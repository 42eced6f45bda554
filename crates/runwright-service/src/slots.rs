//! Slot accounting for the whole service: `concurrent` jobs in all (GitLab's worker pool), `limit` per
//! `[[runners]]` entry, and GitLab's per-entry job slots `CI_CONCURRENT_ID` / `CI_CONCURRENT_PROJECT_ID`
//! (reference `protocol.md` §7.4, §8.2). One mutex, one notify: reloads resize in place.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

#[derive(Default)]
struct State {
    concurrent: usize,
    used: usize,
    per_runner: HashMap<String, usize>,
    /// Running jobs: (runner key, project id, concurrent id, concurrent project id).
    jobs: Vec<(String, i64, usize, usize)>,
}

#[derive(Clone)]
pub struct Slots {
    inner: Arc<(Mutex<State>, Notify)>,
}

impl Slots {
    pub fn new(concurrent: usize) -> Self {
        Self {
            inner: Arc::new((
                Mutex::new(State {
                    concurrent: concurrent.max(1),
                    ..Default::default()
                }),
                Notify::new(),
            )),
        }
    }

    pub fn set_concurrent(&self, concurrent: usize) {
        if let Ok(mut s) = self.inner.0.lock() {
            s.concurrent = concurrent.max(1);
        }
        self.inner.1.notify_waiters();
    }

    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.inner.0.lock().map(|s| s.used).unwrap_or(0)
    }

    /// Waits for a global slot and, when `limit > 0`, a slot of this runner entry.
    pub async fn acquire(&self, runner: &str, limit: usize) -> SlotGuard {
        loop {
            let notified = self.inner.1.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Ok(mut s) = self.inner.0.lock() {
                let mine = s.per_runner.get(runner).copied().unwrap_or(0);
                if s.used < s.concurrent && (limit == 0 || mine < limit) {
                    s.used += 1;
                    *s.per_runner.entry(runner.to_string()).or_default() += 1;
                    return SlotGuard {
                        slots: self.clone(),
                        runner: runner.to_string(),
                        job: None,
                    };
                }
            }
            notified.await;
        }
    }
}

/// Held from the job request until the job's final update; releasing it frees the slot.
pub struct SlotGuard {
    slots: Slots,
    runner: String,
    job: Option<(i64, usize, usize)>,
}

impl SlotGuard {
    /// Assigns the lowest free `CI_CONCURRENT_ID` (per runner) and `CI_CONCURRENT_PROJECT_ID` (per runner and
    /// project) — runner commands/builds_helper.go.
    pub fn assign_job(&mut self, project_id: i64) -> (usize, usize) {
        let Ok(mut s) = self.slots.inner.0.lock() else {
            return (0, 0);
        };
        let lowest_free = |used: Vec<usize>| (0..).find(|i| !used.contains(i)).unwrap_or(0);
        let cid = lowest_free(
            s.jobs
                .iter()
                .filter(|j| j.0 == self.runner)
                .map(|j| j.2)
                .collect(),
        );
        let cpid = lowest_free(
            s.jobs
                .iter()
                .filter(|j| j.0 == self.runner && j.1 == project_id)
                .map(|j| j.3)
                .collect(),
        );
        s.jobs.push((self.runner.clone(), project_id, cid, cpid));
        self.job = Some((project_id, cid, cpid));
        (cid, cpid)
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Ok(mut s) = self.slots.inner.0.lock() {
            s.used = s.used.saturating_sub(1);
            if let Some(n) = s.per_runner.get_mut(&self.runner) {
                *n = n.saturating_sub(1);
            }
            if let Some((p, c, cp)) = self.job {
                let runner = &self.runner;
                s.jobs
                    .retain(|j| !(j.0 == *runner && j.1 == p && j.2 == c && j.3 == cp));
            }
        }
        self.slots.inner.1.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_and_limit_are_enforced_and_ids_reused() {
        let slots = Slots::new(2);
        let mut a = slots.acquire("r1", 1).await;
        // r1 is at its limit: a second r1 slot waits even though a global slot is free.
        let blocked = tokio::time::timeout(Duration::from_millis(50), slots.acquire("r1", 1)).await;
        assert!(blocked.is_err());
        let mut b = slots.acquire("r2", 0).await;
        assert_eq!(slots.used(), 2);
        assert_eq!(a.assign_job(7), (0, 0));
        assert_eq!(b.assign_job(7), (0, 0), "ids are per runner");
        let waiter = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire("r2", 0).await }
        });
        drop(a);
        let mut c = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken")
            .expect("joined");
        assert_eq!(c.assign_job(7), (1, 1));
        drop(b);
        slots.set_concurrent(3);
        let mut d = slots.acquire("r2", 0).await;
        assert_eq!(d.assign_job(8), (0, 0));
    }
}
