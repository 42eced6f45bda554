//! Scripted and random fault injection (style.md idea 9: fault-injecting servers).
//!
//! A [`FaultPlan`] is shared by every connection of one coordinator. Per [`Endpoint`] it keeps a FIFO queue of
//! scripted faults applied to the next matching requests, and optionally a seeded random mode for soak tests
//! (every endpoint, with an optional cap on consecutive faults per resource so that a soak stays within the
//! runner's retry budgets). It also counts every fault it actually injected, by kind.
//!
//! Faults that only make sense for some requests wait at the head of their queue until such a request
//! arrives: [`Fault::RangeMismatch`] is applied to trace patches only, [`Fault::Accepted202`] only to a final
//! job update that carries a trace checksum (the only case where GitLab can answer `202`, gitlab
//! app/services/ci/update_build_state_service.rb `accept_available?`).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// Re-exported here, where fault plans name them.
pub use crate::log::Endpoint;

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status (e.g. 500, 502, 503) without touching any state.
    Status(u16),
    /// Answer `429 Too Many Requests` with `Retry-After: <retry_after>` (seconds), as GitLab's rate limiter
    /// and migration backoff do (gitlab lib/api/ci/helpers/runner.rb `check_if_backoff_required!`).
    TooManyRequests { retry_after: u64 },
    /// Close the connection before any response byte is written; the request is not processed.
    Reset,
    /// Process the request normally, then close the connection instead of sending the response (the client
    /// cannot know whether its request took effect).
    ResetAfterProcessing,
    /// Wait this long, then process the request normally.
    Stall(Duration),
    /// Process the request normally, then wait this long before answering: a job handed out whose answer is
    /// slow to arrive (a client that gives up on the request meanwhile loses the job).
    StallAfterProcessing(Duration),
    /// Hold the request this long without processing it, then close the connection: a response stalled
    /// past the client's timeout (pick a duration above it). The request never takes effect. Not applied to
    /// git traffic (git has no such timeout; the job would hang instead).
    Hang(Duration),
    /// Process the request normally, then send its answer (status and headers kept) with this many spaces
    /// appended to the body, streamed and never held in memory: a coordinator (or proxy) answering with a
    /// huge body. A job payload stays valid JSON (trailing whitespace). Not applied to git traffic; an answer
    /// that may carry no body (`204`, `304`) leaves the fault queued for the next request.
    OversizedAnswer { bytes: u64 },
    /// Answer `307 Temporary Redirect` with `Location: <to><path and query of the request>`, without
    /// touching any state: how GitLab moves an artifact upload to another host (the runner switches its
    /// base URL to the `Location`'s scheme and host and retries there, `protocol.md` §5.1). `to` is a base
    /// URL such as another coordinator's [`crate::Coordinator::url`].
    TemporaryRedirect { to: String },
    /// Trace patches only: answer `416` claiming a stored length of half the current one, and truncate the
    /// stored trace to that length so the bytes the runner resends stay consistent.
    RangeMismatch,
    /// Final job updates with a checksum only: answer `202 Accepted` with `X-GitLab-Trace-Update-Interval`
    /// as GitLab does while live trace chunks are still being persisted.
    Accepted202,
}

impl Fault {
    /// The kind of this fault (for counting).
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Status(_) => FaultKind::Status,
            Fault::TooManyRequests { .. } => FaultKind::TooManyRequests,
            Fault::Reset => FaultKind::Reset,
            Fault::ResetAfterProcessing => FaultKind::ResetAfterProcessing,
            Fault::Stall(_) => FaultKind::Stall,
            Fault::StallAfterProcessing(_) => FaultKind::StallAfterProcessing,
            Fault::Hang(_) => FaultKind::Hang,
            Fault::OversizedAnswer { .. } => FaultKind::OversizedAnswer,
            Fault::TemporaryRedirect { .. } => FaultKind::TemporaryRedirect,
            Fault::RangeMismatch => FaultKind::RangeMismatch,
            Fault::Accepted202 => FaultKind::Accepted202,
        }
    }

    fn applies_to(&self, ctx: &FaultContext) -> bool {
        match self {
            Fault::RangeMismatch => ctx.endpoint == Endpoint::PatchTrace,
            Fault::Accepted202 => {
                ctx.endpoint == Endpoint::UpdateJob && ctx.final_update_with_checksum
            }
            Fault::Hang(_) | Fault::OversizedAnswer { .. } => ctx.endpoint != Endpoint::Git,
            _ => true,
        }
    }

    /// Faults the HTTP layer applies before (or instead of) the handler.
    pub(crate) fn is_transport(&self) -> bool {
        !matches!(self, Fault::RangeMismatch | Fault::Accepted202)
    }
}

/// Fault kinds, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    Status,
    TooManyRequests,
    Reset,
    ResetAfterProcessing,
    Stall,
    StallAfterProcessing,
    Hang,
    OversizedAnswer,
    RangeMismatch,
    Accepted202,
    TemporaryRedirect,
}

impl FaultKind {
    /// Short name for reports (`status`, `429`, `reset`, `hang`, `416`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Status => "status",
            FaultKind::TooManyRequests => "429",
            FaultKind::Reset => "reset",
            FaultKind::ResetAfterProcessing => "reset_after_processing",
            FaultKind::Stall => "stall",
            FaultKind::StallAfterProcessing => "stall_after_processing",
            FaultKind::Hang => "hang",
            FaultKind::OversizedAnswer => "oversized",
            FaultKind::RangeMismatch => "416",
            FaultKind::Accepted202 => "202",
            FaultKind::TemporaryRedirect => "307",
        }
    }
}

/// What the HTTP layer knows about a request when it asks for a fault.
#[derive(Debug, Clone)]
pub(crate) struct FaultContext {
    pub endpoint: Endpoint,
    /// `PUT /jobs/:id` with a state other than `running`/`pending` and a trace checksum.
    pub final_update_with_checksum: bool,
    /// The resource the request is about (method and path without query; for git the credentials, i.e. the
    /// job): repeated requests with the same key are retries of one call, for [`FaultPlan::set_max_streak`].
    pub key: String,
}

/// A fault handed to a request, with where it came from (so an unused one can be put back).
#[derive(Debug, Clone)]
pub(crate) struct Drawn {
    pub fault: Fault,
    pub from_queue: bool,
}

struct RandomMode {
    share: f64,
    kinds: Vec<Fault>,
    rng: StdRng,
    /// At most this many random faults in a row per request key (`None`: no cap).
    max_streak: Option<u32>,
    /// Random faults in a row so far, per request key (a request that passes clears its key).
    streaks: HashMap<String, u32>,
}

#[derive(Default)]
struct PlanState {
    queues: HashMap<Endpoint, VecDeque<Fault>>,
    random: Option<RandomMode>,
    counts: BTreeMap<FaultKind, u64>,
    by_endpoint: BTreeMap<(Endpoint, FaultKind), u64>,
}

/// Shared, thread-safe fault plan of one coordinator (see the module docs).
#[derive(Default)]
pub struct FaultPlan {
    state: Mutex<PlanState>,
}

impl std::fmt::Debug for FaultPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("FaultPlan")
            .field("queues", &st.queues)
            .field(
                "random",
                &st.random.as_ref().map(|r| (r.share, r.kinds.clone())),
            )
            .field("counts", &st.counts)
            .finish()
    }
}

impl FaultPlan {
    fn lock(&self) -> std::sync::MutexGuard<'_, PlanState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queue one fault for the next matching request on `endpoint`.
    pub fn push(&self, endpoint: Endpoint, fault: Fault) {
        self.push_n(endpoint, fault, 1);
    }

    /// Queue the same fault for the next `n` matching requests on `endpoint`.
    pub fn push_n(&self, endpoint: Endpoint, fault: Fault, n: usize) {
        let mut st = self.lock();
        let q = st.queues.entry(endpoint).or_default();
        for _ in 0..n {
            q.push_back(fault.clone());
        }
    }

    /// Faults still queued for `endpoint`.
    pub fn pending(&self, endpoint: Endpoint) -> usize {
        self.lock().queues.get(&endpoint).map_or(0, VecDeque::len)
    }

    /// Random mode for soak tests: each request to any endpoint but [`Endpoint::Other`] whose queue is empty
    /// gets, with probability `share` (0..=1), one of `kinds` that applies to it, drawn uniformly from a
    /// generator seeded with `seed` (so a failing soak run can be replayed; with concurrent clients the order
    /// of requests, and so the exact faults, still vary).
    pub fn set_random(&self, share: f64, kinds: &[Fault], seed: u64) {
        let share = if share.is_finite() {
            share.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.lock().random = Some(RandomMode {
            share,
            kinds: kinds.to_vec(),
            rng: StdRng::seed_from_u64(seed),
            max_streak: None,
            streaks: HashMap::new(),
        });
    }

    /// Random mode only: after `n` random faults in a row on one resource (same method and path), the next
    /// request to it passes. GitLab's runner gives up by design after a few tries (3 for artifact transfers,
    /// `GET_SOURCES_ATTEMPTS` for git); a soak that expects every job to finish keeps its faults within those
    /// budgets with this. Git is different: one fetch is several requests, any of which fails the whole fetch,
    /// so a passing request does not end a streak there — the git requests of one job (its credentials; all
    /// anonymous ones, git's `401` handshake, count as one) get at most `n` faults in all, and a job with
    /// `GET_SOURCES_ATTEMPTS` above `n` gets its sources. Call after [`FaultPlan::set_random`].
    pub fn set_max_streak(&self, n: u32) {
        if let Some(random) = self.lock().random.as_mut() {
            random.max_streak = Some(n);
        }
    }

    /// Turn random mode off.
    pub fn clear_random(&self) {
        self.lock().random = None;
    }

    /// Drop every queued fault and turn random mode off (counters are kept).
    pub fn clear(&self) {
        let mut st = self.lock();
        st.queues.clear();
        st.random = None;
    }

    /// How many faults of `kind` were injected so far.
    pub fn injected(&self, kind: FaultKind) -> u64 {
        self.lock().counts.get(&kind).copied().unwrap_or(0)
    }

    /// How many faults of `kind` were injected on `endpoint`.
    pub fn injected_on(&self, endpoint: Endpoint, kind: FaultKind) -> u64 {
        self.lock()
            .by_endpoint
            .get(&(endpoint, kind))
            .copied()
            .unwrap_or(0)
    }

    /// All faults injected so far.
    pub fn injected_total(&self) -> u64 {
        self.lock().counts.values().sum()
    }

    /// Injected faults by kind.
    pub fn counts(&self) -> BTreeMap<FaultKind, u64> {
        self.lock().counts.clone()
    }

    /// Draw the fault for one request, if any. Queued faults first; random mode only when the queue is empty.
    pub(crate) fn draw(&self, ctx: &FaultContext) -> Option<Drawn> {
        if ctx.endpoint == Endpoint::Other {
            return None;
        }
        let mut st = self.lock();
        if let Some(q) = st.queues.get_mut(&ctx.endpoint) {
            if let Some(front) = q.front() {
                if front.applies_to(ctx) {
                    return q.pop_front().map(|fault| Drawn {
                        fault,
                        from_queue: true,
                    });
                }
                // A fault that does not apply to this request waits for one it applies to.
                return None;
            }
        }
        let random = st.random.as_mut()?;
        let streak = random.streaks.get(&ctx.key).copied().unwrap_or(0);
        let capped = random.max_streak.is_some_and(|max| streak >= max);
        // The generator is drawn from even when capped, so a cap does not shift the rest of the sequence.
        let hit = !random.kinds.is_empty() && random.rng.random_bool(random.share);
        let eligible: Vec<&Fault> = random.kinds.iter().filter(|f| f.applies_to(ctx)).collect();
        let fault = if hit && !capped && !eligible.is_empty() {
            let pick = random.rng.random_range(0..eligible.len());
            eligible.get(pick).map(|f| (*f).clone())
        } else {
            None
        };
        match &fault {
            Some(_) => *random.streaks.entry(ctx.key.clone()).or_default() += 1,
            // Git counts every fault of the job (see `set_max_streak`).
            None if ctx.endpoint == Endpoint::Git => {}
            None => {
                random.streaks.remove(&ctx.key);
            }
        }
        fault.map(|fault| Drawn {
            fault,
            from_queue: false,
        })
    }

    /// A drawn fault could not be applied (e.g. the request failed authentication first): queued faults go
    /// back to the head of their queue.
    pub(crate) fn give_back(&self, endpoint: Endpoint, drawn: Drawn) {
        if drawn.from_queue {
            self.lock()
                .queues
                .entry(endpoint)
                .or_default()
                .push_front(drawn.fault);
        }
    }

    /// A fault drawn for a request whose answer could not take it (an [`Fault::OversizedAnswer`] for a `204`):
    /// queued faults go back to the head of their queue, random ones are not counted.
    pub(crate) fn not_applied(&self, endpoint: Endpoint, drawn: Drawn) {
        self.give_back(endpoint, drawn);
    }

    /// Count a fault that was applied.
    pub(crate) fn record(&self, endpoint: Endpoint, fault: &Fault) {
        let mut st = self.lock();
        *st.counts.entry(fault.kind()).or_default() += 1;
        *st.by_endpoint.entry((endpoint, fault.kind())).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(endpoint: Endpoint, final_update: bool) -> FaultContext {
        keyed(endpoint, final_update, endpoint.as_str())
    }

    fn keyed(endpoint: Endpoint, final_update: bool, key: &str) -> FaultContext {
        FaultContext {
            endpoint,
            final_update_with_checksum: final_update,
            key: key.to_string(),
        }
    }

    #[test]
    fn queued_faults_are_fifo_and_wait_for_applicable_requests() {
        let plan = FaultPlan::default();
        plan.push(Endpoint::UpdateJob, Fault::Accepted202);
        plan.push(Endpoint::UpdateJob, Fault::Status(500));
        assert!(
            plan.draw(&ctx(Endpoint::UpdateJob, false)).is_none(),
            "running update skips 202"
        );
        let d = plan
            .draw(&ctx(Endpoint::UpdateJob, true))
            .expect("final update gets it");
        assert_eq!(d.fault, Fault::Accepted202);
        assert_eq!(
            plan.draw(&ctx(Endpoint::UpdateJob, false)).map(|d| d.fault),
            Some(Fault::Status(500))
        );
        assert!(plan.draw(&ctx(Endpoint::UpdateJob, false)).is_none());
    }

    #[test]
    fn give_back_restores_queue_head() {
        let plan = FaultPlan::default();
        plan.push_n(Endpoint::PatchTrace, Fault::RangeMismatch, 2);
        let d = plan.draw(&ctx(Endpoint::PatchTrace, false)).expect("drawn");
        plan.give_back(Endpoint::PatchTrace, d);
        assert_eq!(plan.pending(Endpoint::PatchTrace), 2);
    }

    #[test]
    fn random_mode_is_reproducible() {
        let draws = |seed| {
            let plan = FaultPlan::default();
            plan.set_random(
                0.5,
                &[Fault::Status(503), Fault::Reset, Fault::RangeMismatch],
                seed,
            );
            (0..200)
                .map(|_| {
                    plan.draw(&ctx(Endpoint::RequestJob, false))
                        .map(|d| d.fault)
                })
                .collect::<Vec<_>>()
        };
        let a = draws(7);
        assert_eq!(a, draws(7));
        let hits = a.iter().filter(|f| f.is_some()).count();
        assert!((50..150).contains(&hits), "about half: {hits}");
        assert!(
            a.iter().flatten().all(|f| *f != Fault::RangeMismatch),
            "not applicable to request_job"
        );
    }

    #[test]
    fn random_mode_covers_every_endpoint_but_other() {
        let plan = FaultPlan::default();
        plan.set_random(1.0, &[Fault::Status(500)], 1);
        for endpoint in [
            Endpoint::RequestJob,
            Endpoint::UpdateJob,
            Endpoint::PatchTrace,
            Endpoint::ArtifactUpload,
            Endpoint::ArtifactDownload,
            Endpoint::ObjectStorage,
            Endpoint::Git,
        ] {
            assert_eq!(
                plan.draw(&ctx(endpoint, false)).map(|d| d.fault),
                Some(Fault::Status(500)),
                "{endpoint:?}"
            );
        }
        assert!(plan.draw(&ctx(Endpoint::Other, false)).is_none());
    }

    #[test]
    fn hang_is_never_applied_to_git() {
        let plan = FaultPlan::default();
        let hang = Fault::Hang(Duration::from_secs(5));
        plan.set_random(1.0, std::slice::from_ref(&hang), 3);
        assert!(plan.draw(&ctx(Endpoint::Git, false)).is_none());
        assert_eq!(
            plan.draw(&ctx(Endpoint::PatchTrace, false))
                .map(|d| d.fault),
            Some(hang.clone())
        );
        assert_eq!(hang.kind(), FaultKind::Hang);
        assert!(hang.is_transport());
    }

    #[test]
    fn oversized_answer_is_a_kind_of_its_own_and_spares_git() {
        let plan = FaultPlan::default();
        let big = Fault::OversizedAnswer { bytes: 100 << 20 };
        plan.push(Endpoint::Git, big.clone());
        assert!(plan.draw(&ctx(Endpoint::Git, false)).is_none());
        plan.clear();
        plan.push(Endpoint::RequestJob, big.clone());
        let d = plan.draw(&ctx(Endpoint::RequestJob, false)).expect("drawn");
        plan.not_applied(Endpoint::RequestJob, d);
        assert_eq!(plan.pending(Endpoint::RequestJob), 1, "back in the queue");
        assert_eq!(big.kind(), FaultKind::OversizedAnswer);
        assert_eq!(big.kind().as_str(), "oversized");
    }

    #[test]
    fn max_streak_lets_the_next_try_of_a_resource_through() {
        let plan = FaultPlan::default();
        plan.set_random(1.0, &[Fault::Reset], 9);
        plan.set_max_streak(2);
        let a = |plan: &FaultPlan| {
            plan.draw(&keyed(Endpoint::UpdateJob, false, "PUT /jobs/1"))
                .is_some()
        };
        let b = |plan: &FaultPlan| {
            plan.draw(&keyed(Endpoint::UpdateJob, false, "PUT /jobs/2"))
                .is_some()
        };
        // Every request would be faulted (share 1.0): two in a row per resource, then one passes.
        assert_eq!(
            [a(&plan), a(&plan), a(&plan), a(&plan)],
            [true, true, false, true]
        );
        // Another resource has its own streak.
        assert_eq!([b(&plan), b(&plan), b(&plan)], [true, true, false]);
        // Git: at most two faults per job in all, whatever passes in between.
        let plan = FaultPlan::default();
        plan.set_random(0.5, &[Fault::Status(500)], 5);
        plan.set_max_streak(2);
        let faults = (0..200)
            .filter(|_| {
                plan.draw(&keyed(Endpoint::Git, false, "git job-1"))
                    .is_some()
            })
            .count();
        assert_eq!(faults, 2);
    }
}
