//! GitLab's cache and artifact transfer stages around the user script (reference `protocol.md` §5, §6, §7.1
//! rows 4, 5, 8, 9): `restore_cache` and `download_artifacts` before it, `archive_cache` and
//! `upload_artifacts_on_success`/`_on_failure` after it. Each is a [`JobStep`](runwright_engine::steps::JobStep) of `runwright-engine`, which
//! runs them in GitLab's order and decides how their failures count; the service builds them with its HTTP
//! client and cache store (gitlab-runner runs them in its helper binary; a helper container can run this crate).

pub mod artifacts;
pub mod cache;
pub mod error;

pub use error::Error;
use runwright_engine::steps::StepContext;

/// `artifacts:when` / `cache:when` against the script's result: empty and `on_success` after success only.
pub(crate) fn when_matches(when: &str, succeeded: bool) -> bool {
    match when {
        "always" => true,
        "on_failure" => !succeeded,
        _ => succeeded,
    }
}

/// The section of an after-script step, named and titled after the script's result as GitLab's runner does
/// (`archive_cache` / `archive_cache_on_failure`, "Saving cache for successful job").
pub(crate) fn result_section(
    ctx: &StepContext<'_>,
    on_success: &str,
    on_failure: &str,
    title: &str,
) -> (String, String) {
    if ctx.succeeded {
        (on_success.into(), format!("{title} for successful job"))
    } else {
        (on_failure.into(), format!("{title} for failed job"))
    }
}

/// Resolves `paths`/`exclude`/`untracked` in the project directory and prints GitLab's lines about it. `what`
/// (`artifacts`, `cache`) names the archive in the error for a selection over the runner's `max_archive_files`.
pub(crate) async fn select(
    ctx: &StepContext<'_>,
    mut spec: runwright_archive::ArchiveSpec,
    what: &'static str,
) -> Result<runwright_archive::Selection, Error> {
    let project = ctx.project_dir.to_path_buf();
    // The selection lives in the service's memory (GitLab's runner makes it in its helper process, in the
    // job's): one job's file count must not exhaust it (issue 17).
    spec.max_files = Some(ctx.runner.max_archive_files());
    let selection = blocking(move || {
        runwright_archive::select_files(&project, &spec).map_err(|e| Error::archive(e, what))
    })
    .await?;
    for info in &selection.infos {
        ctx.line(info);
    }
    for w in &selection.warnings {
        ctx.warn(w);
    }
    Ok(selection)
}

/// Extraction options for the project directory: the job's owner, everything else safe by default.
pub(crate) fn extract_options(ctx: &StepContext<'_>) -> runwright_archive::ExtractOptions {
    runwright_archive::ExtractOptions {
        owner: ctx.owner,
        // As many entries as the runner would put in one archive (issue 17).
        max_entries: Some(ctx.runner.max_archive_files()),
        ..Default::default()
    }
}

/// Runs blocking archive work off the async threads, turning a panic into an error rather than a crash.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await?
}
