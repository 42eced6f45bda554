//! Pluggable stages around the user script: restore cache and download artifacts before it, save cache and
//! upload artifacts after it (reference `protocol.md` §7.1 rows 4, 5, 8, 9). The archives issue fills them in;
//! the engine only knows where they run and how their failures count.

use crate::variables::Variables;
use async_trait::async_trait;
use runwright_client::failure_reason::FailureReason;
use runwright_client::types::JobResponse;
use runwright_trace::TraceBuffer;
use std::path::Path;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPosition {
    /// After get_sources, before the user script.
    BeforeScript,
    /// After after_script.
    AfterScript,
}

pub struct StepContext<'a> {
    pub job: &'a JobResponse,
    pub trace: &'a TraceBuffer,
    pub project_dir: &'a Path,
    pub variables: &'a Variables,
    /// Whether the user script succeeded (for `when: on_success/on_failure`).
    pub succeeded: bool,
    pub cancel: CancellationToken,
}

#[derive(Debug, Clone)]
pub struct StepError {
    pub reason: FailureReason,
    pub message: String,
}

#[async_trait]
pub trait JobStep: Send + Sync {
    fn position(&self) -> StepPosition;
    /// The section name and title when this step has work for the job; `None` skips it without a section.
    fn section(&self, ctx: &StepContext<'_>) -> Option<(String, String)>;
    async fn run(&self, ctx: &StepContext<'_>) -> Result<(), StepError>;
}
