//! The trace offset bookkeeping under random weather: a fake GitLab that accepts patches, loses data (answers
//! `416` with a shorter `Range`, as after a failover), applies a patch but loses the answer, or fails, in any
//! order, while the job writes in random pieces at random times. Whatever happens, every patch carries the
//! bytes of the buffer at the offset its `Content-Range` names, and GitLab ends with exactly what was written.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use runwright_api::types::VersionInfo;
use runwright_client::{FinalState, JobTrace, JobTraceOptions};
use runwright_trace::{TraceBuffer, TraceOptions};

use crate::support::*;

/// What the fake GitLab does with one patch.
#[derive(Debug, Clone, Copy)]
enum Weather {
    /// Append at the stored length (GitLab's rule), `416` when the start differs.
    Fair,
    /// Keep only this share (percent) of what is stored, then answer `416` with the shorter length.
    Truncate(u8),
    /// Apply the patch but answer `500` (the answer is lost).
    LostAnswer,
    /// Answer `500` without applying.
    Fail,
}

fn weather() -> impl Strategy<Value = Weather> {
    prop_oneof![
        4 => Just(Weather::Fair),
        1 => (0u8..=100).prop_map(Weather::Truncate),
        1 => Just(Weather::LostAnswer),
        1 => Just(Weather::Fail),
    ]
}

fn apply(stored: &mut Vec<u8>, r: &Recorded) -> Option<Reply> {
    let start = r
        .header("content-range")
        .and_then(|v| v.split('-').next())
        .and_then(|s| s.parse::<usize>().ok())?;
    if start != stored.len() {
        return Some(Reply::status(416).header("Range", &format!("0-{}", stored.len())));
    }
    stored.extend_from_slice(&r.body);
    None
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn gitlab_ends_with_exactly_what_was_written(
        script in prop::collection::vec(weather(), 0..12),
        writes in prop::collection::vec(("[a-z \n]{1,40}", 0u64..25), 0..16),
        max_patch in 1usize..64,
    ) {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let (stored, patches, buffer) = rt.block_on(async {
            let stored = Arc::new(Mutex::new(Vec::new()));
            let server_stored = Arc::clone(&stored);
            let mut script = script.into_iter();
            let server = FakeGitLab::start(move |r| {
                let mut stored = server_stored.lock().expect("stored");
                if r.method != "PATCH" {
                    return Reply::status(200).header("Job-Status", "success");
                }
                match script.next().unwrap_or(Weather::Fair) {
                    Weather::Fair => apply(&mut stored, r).unwrap_or_else(|| {
                        Reply::status(202)
                            .header("Range", &format!("0-{}", stored.len()))
                            .header("Job-Status", "running")
                    }),
                    Weather::Truncate(pct) => {
                        let keep = stored.len() * usize::from(pct) / 100;
                        stored.truncate(keep);
                        Reply::status(416).header("Range", &format!("0-{keep}"))
                    }
                    Weather::LostAnswer => {
                        let _ = apply(&mut stored, r);
                        Reply::status(500)
                    }
                    Weather::Fail => Reply::status(500),
                }
            })
            .await;
            let buffer = TraceBuffer::new(TraceOptions::default());
            let opts = JobTraceOptions {
                update_interval: Duration::from_millis(10),
                max_patch,
                ..Default::default()
            };
            let trace = JobTrace::start(
                fast_client(&server.url()),
                4711,
                JOB_TOKEN.to_owned(),
                VersionInfo::default(),
                buffer.clone(),
                opts,
            )
            .0;
            for (text, pause) in &writes {
                buffer.write(text.as_bytes());
                tokio::time::sleep(Duration::from_millis(*pause)).await;
            }
            tokio::time::timeout(Duration::from_secs(60), trace.finish(FinalState::success()))
                .await
                .expect("final update loop ends in time")
                .expect("final update");
            let patches: Vec<Recorded> =
                server.requests().into_iter().filter(|r| r.method == "PATCH").collect();
            let stored = stored.lock().expect("stored").clone();
            (stored, patches, buffer)
        });
        let written: String = writes.iter().map(|(t, _)| t.as_str()).collect();
        let all = buffer.read(0, usize::MAX);
        prop_assert_eq!(&all, written.as_bytes());
        for p in &patches {
            let range = p.header("content-range").unwrap_or_default();
            let (a, b) = range.split_once('-').unwrap_or_default();
            let (a, b): (usize, usize) = (a.parse().unwrap_or(usize::MAX), b.parse().unwrap_or(0));
            prop_assert!(!p.body.is_empty() && b + 1 == a + p.body.len(), "{} for {} bytes", range, p.body.len());
            prop_assert!(p.body.len() <= max_patch);
            prop_assert_eq!(&all[a..=b], &p.body[..], "patch {} is not the buffer's bytes there", range);
        }
        prop_assert_eq!(String::from_utf8_lossy(&stored), written);
    }
}
