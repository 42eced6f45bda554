//! GitLab's cache and artifact transfer stages around the user script (reference `protocol.md` §5, §6, §7.1
//! rows 4, 5, 8, 9): `restore_cache` and `download_artifacts` before it, `archive_cache` and
//! `upload_artifacts_on_success`/`_on_failure` after it. Each is a [`JobStep`](runwright_engine::steps::JobStep) of `runwright-engine`, which
//! runs them in GitLab's order and decides how their failures count; the service builds them with its HTTP
//! client and cache store (gitlab-runner runs them in its helper binary; a helper container can run this crate).
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod artifacts;
pub mod cache;

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
) -> Result<runwright_archive::Selection, String> {
    let project = ctx.project_dir.to_path_buf();
    // The selection lives in the service's memory (GitLab's runner makes it in its helper process, in the
    // job's): one job's file count must not exhaust it (issue 17).
    spec.max_files = Some(ctx.runner.max_archive_files());
    let selection = blocking(move || {
        runwright_archive::select_files(&project, &spec).map_err(|e| archive_error(e, what))
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

/// An archive error as the job log shows it: for one over `max_archive_files`, the limit, whose it is, and how
/// to get under it or raise it.
pub(crate) fn archive_error(e: runwright_archive::Error, what: &str) -> String {
    match e {
        runwright_archive::Error::TooManyFiles { limit } => too_many_files(what, limit),
        // The caller names the archive (`extracting artifacts of build (42): …`, `Extracting cache key: …`).
        runwright_archive::Error::TooManyEntries { limit, .. } => format!(
            "the archive holds more than {limit} entries, over this runner's limit for one archive \
             (max_archive_files in its [[runners]] entry of config.toml; runwright reads an archive's index in the \
             runner's own memory): archive fewer, larger files, or ask the runner's administrator to raise \
             max_archive_files"
        ),
        e => e.to_string(),
    }
}

fn too_many_files(what: &str, limit: usize) -> String {
    format!(
        "{what}: more than {limit} files, directories and symlinks match, over this runner's limit for one \
         archive (max_archive_files in its [[runners]] entry of config.toml; runwright lists an archive's files \
         in the runner's own memory). Archive fewer, larger files (for example, pack the directory into one \
         tar file in the job's script and archive that), or ask the runner's administrator to raise \
         max_archive_files"
    )
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
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(format!("internal error in an archive task: {e}")),
    }
}
