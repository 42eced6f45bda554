//! The command lines gitlab-runner's own scripts pass to its helper parse into the flags they mean. The
//! argument lists are gitlab-runner's test expectations (shells/abstract_test.go, executors/kubernetes/
//! kubernetes_test.go, executors/docker/services.go), so a script GitLab generates never breaks here.

use crate::HelperCommand;
use clap::Parser;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "gitlab-runner-helper")]
struct Cli {
    #[command(subcommand)]
    command: HelperCommand,
}

fn parse(args: &[&str]) -> HelperCommand {
    let mut argv = vec!["gitlab-runner-helper"];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv) {
        Ok(c) => c.command,
        Err(e) => panic!("{args:?}: {e}"),
    }
}

/// shells/abstract_test.go `TestWriteWritingArtifactsOnSuccess` (the "zip-archive" artifact).
#[test]
fn artifacts_uploader_as_written_on_success() {
    let HelperCommand::ArtifactsUploader(a) = parse(&[
        "artifacts-uploader",
        "--url", "https://example.com:3443",
        "--token", "token",
        "--id", "1000",
        "--timeout", "1h0m0s",
        "--response-header-timeout", "10m0s",
        "--path", "zip-archive",
        "--artifact-format", "zip",
        "--artifact-type", "archive",
    ]) else {
        panic!("not artifacts-uploader")
    };
    assert_eq!(a.credentials.url, "https://example.com:3443");
    assert_eq!(a.credentials.token, "token");
    assert_eq!(a.credentials.id, 1000);
    assert_eq!(a.timeout, Duration::from_secs(3600));
    assert_eq!(a.response_header_timeout, Duration::from_secs(600));
    assert_eq!(a.archiver.paths, ["zip-archive"]);
    assert_eq!(a.format, "zip");
    assert_eq!(a.artifact_type, "archive");
    // gitlab-runner's default name (NewArtifactsUploaderCommand: `Name: "artifacts"`).
    assert_eq!(a.name, "artifacts");
}

/// shells/abstract_test.go `TestWriteWritingArtifactsWithExcludedPaths`.
#[test]
fn artifacts_uploader_with_excluded_paths() {
    let HelperCommand::ArtifactsUploader(a) = parse(&[
        "artifacts-uploader",
        "--url", "https://gitlab.example.com",
        "--token", "token",
        "--id", "1001",
        "--timeout", "1h0m0s",
        "--response-header-timeout", "10m0s",
        "--path", "include/**",
        "--exclude", "include/exclude/*",
        "--artifact-format", "zip",
        "--artifact-type", "archive",
    ]) else {
        panic!("not artifacts-uploader")
    };
    assert_eq!(a.archiver.paths, ["include/**"]);
    assert_eq!(a.archiver.exclude, ["include/exclude/*"]);
    assert_eq!(a.credentials.id, 1001);
}

/// shells/abstract_test.go `TestWriteUploadArtifactIncludesGenerateArtifactsMetadataArgs`: the SLSA flags are
/// accepted (and warned about when the verb runs).
#[test]
fn artifacts_uploader_accepts_the_metadata_flags() {
    let HelperCommand::ArtifactsUploader(a) = parse(&[
        "artifacts-uploader",
        "--url", "https://gitlab.example.com",
        "--token", "token",
        "--id", "1001",
        "--generate-artifacts-metadata",
        "--runner-id", "1",
        "--repo-url", "https://gitlab.example.com/g/p",
        "--repo-digest", "abc",
        "--job-name", "build",
        "--executor-name", "docker",
        "--runner-name", "r",
        "--started-at", "2024-01-01T00:00:00Z",
        "--ended-at", "2024-01-01T00:01:00Z",
        "--schema-version", "v1",
        "--metadata-parameter", "CI_JOB_NAME",
        "--path", "out",
        "--name", "my-artifacts",
        "--expire-in", "1 week",
    ]) else {
        panic!("not artifacts-uploader")
    };
    assert!(a.statement.generate_artifacts_metadata);
    assert_eq!(a.name, "my-artifacts");
    assert_eq!(a.expire_in, "1 week");
}

/// shells/abstract_test.go `TestWriteWritingArchiveCache`, "pre-signed URL cache": file, alternate file,
/// timeout, the cache's paths, the upload URL with its headers and check URL, then the env file.
#[test]
fn cache_archiver_with_a_presigned_url() {
    let HelperCommand::CacheArchiver(a) = parse(&[
        "cache-archiver",
        "--file", "cache_dir/0123abcd/cache.zip",
        "--alternate-file", "cache_dir/cache-key1/cache.zip",
        "--timeout", "10",
        "--path", "vendor/",
        "--untracked",
        "--url", "test://upload/project/1000/01/0123abcd?X-Amz-Signature=s",
        "--header", "Header-1: a value",
        "--header", "X-Fakecloud-Meta-Cachekey: cache-key1",
        "--check-url", "test://head/project/1000/01/0123abcd",
        "--env-file", "/some/path/to/runner-cache-env",
    ]) else {
        panic!("not cache-archiver")
    };
    assert_eq!(a.file, "cache_dir/0123abcd/cache.zip");
    assert_eq!(a.alternate_file.as_deref(), Some("cache_dir/cache-key1/cache.zip"));
    assert_eq!(a.timeout, 10);
    assert_eq!(a.archiver.paths, ["vendor/"]);
    assert!(a.archiver.untracked);
    assert_eq!(a.headers.len(), 2);
    assert_eq!(a.check_url.as_deref(), Some("test://head/project/1000/01/0123abcd"));
    assert_eq!(
        a.env_file.as_deref(),
        Some(std::path::Path::new("/some/path/to/runner-cache-env"))
    );
    // abstract.go `addCacheUploadCommand` with `MaxUploadedArchiveSize`.
    let HelperCommand::CacheArchiver(a) = parse(&[
        "cache-archiver",
        "--file", "f/cache.zip",
        "--timeout", "10",
        "--max-uploaded-archive-size", "1024",
        "--path", "some/path1",
        "--path", "other/path2",
    ]) else {
        panic!("not cache-archiver")
    };
    assert_eq!(a.max_uploaded_archive_size, 1024);
    assert_eq!(a.archiver.paths, ["some/path1", "other/path2"]);
}

/// shells/abstract_test.go `TestWriteWritingArchiveCache`, "GoCloud cache": accepted (warned about when run).
#[test]
fn cache_archiver_with_a_gocloud_url() {
    let HelperCommand::CacheArchiver(a) = parse(&[
        "cache-archiver",
        "--file", "cache_dir/k/cache.zip",
        "--alternate-file", "cache_dir/k2/cache.zip",
        "--timeout", "10",
        "--path", "when-always",
        "--gocloud-url", "gocloud://test/project/1000/k",
        "--env-file", "/some/path/to/runner-cache-env",
    ]) else {
        panic!("not cache-archiver")
    };
    assert_eq!(a.gocloud_url.as_deref(), Some("gocloud://test/project/1000/k"));
}

/// shells/abstract_test.go (the restore-cache tests, `cacheType == "test"`): file, timeout, URL, HEAD URL and
/// the alternate pair.
#[test]
fn cache_extractor_as_written_for_a_restore() {
    let HelperCommand::CacheExtractor(a) = parse(&[
        "cache-extractor",
        "--file", "../cache_dir/0123abcd/cache.zip",
        "--timeout", "10",
        "--url", "test://download/project/1000/01/0123abcd",
        "--head-url", "test://head/project/1000/01/0123abcd",
        "--alternate-url", "test://download/project/1000/key",
        "--alternate-head-url", "test://head/project/1000/key",
    ]) else {
        panic!("not cache-extractor")
    };
    assert_eq!(a.file, "../cache_dir/0123abcd/cache.zip");
    assert_eq!(a.timeout, 10);
    assert_eq!(a.url.as_deref(), Some("test://download/project/1000/01/0123abcd"));
    assert_eq!(a.head_url.as_deref(), Some("test://head/project/1000/01/0123abcd"));
    assert_eq!(a.alternate_url.as_deref(), Some("test://download/project/1000/key"));
    assert_eq!(a.alternate_head_url.as_deref(), Some("test://head/project/1000/key"));
    assert_eq!(a.retry.retry, 2);
    assert_eq!(a.retry.retry_time, Duration::from_secs(1));
    // The GoCloud form.
    let HelperCommand::CacheExtractor(a) = parse(&[
        "cache-extractor",
        "--file", "../cache_dir/k/cache.zip",
        "--timeout", "10",
        "--gocloud-url", "gocloud://test/project/1000/k",
        "--env-file", "/tmp/env",
        "--alternate-gocloud-url", "gocloud://test/project/1000/k2",
    ]) else {
        panic!("not cache-extractor")
    };
    assert!(a.gocloud_url.is_some() && a.alternate_gocloud_url.is_some());
    // The tuning flags gitlab-runner has and runwright does not implement are accepted.
    let HelperCommand::CacheExtractor(a) = parse(&[
        "cache-extractor",
        "--file", "c.zip",
        "--transfer-buffer-size", "4194304",
        "--chunk-size", "0",
        "--concurrency", "16",
        "--transfer-meter-frequency", "5s",
        "--retry", "3",
        "--retry-time", "2s",
    ]) else {
        panic!("not cache-extractor")
    };
    assert_eq!(a.tuning.concurrency, Some(16));
    assert_eq!(a.retry.retry, 3);
}

/// shells/abstract.go `downloadArtifacts`.
#[test]
fn artifacts_downloader_as_written() {
    let HelperCommand::ArtifactsDownloader(a) = parse(&[
        "artifacts-downloader",
        "--url", "https://gitlab.example.com",
        "--token", "token",
        "--id", "1000",
    ]) else {
        panic!("not artifacts-downloader")
    };
    assert_eq!(a.credentials.id, 1000);
    assert_eq!(a.credentials.token, "token");
    let HelperCommand::ArtifactsDownloader(a) = parse(&[
        "artifacts-downloader",
        "--url", "https://gitlab.example.com",
        "--id", "1000",
        "--direct-download",
    ]) else {
        panic!("not artifacts-downloader")
    };
    assert!(a.direct_download);
}

/// executors/kubernetes/kubernetes_test.go (`read-logs`), executors/docker/services.go (`health-check`),
/// executors/docker/internal/volumes/permission/linux_set.go (`cache-init`).
#[test]
fn the_other_verbs_as_the_executors_call_them() {
    let HelperCommand::ReadLogs(a) = parse(&[
        "read-logs",
        "--path", "/logs-1/output.log",
        "--offset", "17",
        "--wait-file-timeout", "1m0s",
    ]) else {
        panic!("not read-logs")
    };
    assert_eq!(a.offset, 17);
    assert_eq!(a.wait_file_timeout, Duration::from_secs(60));
    let HelperCommand::HealthCheck(a) = parse(&["health-check", "-p", "80", "--port", "443"]) else {
        panic!("not health-check")
    };
    assert_eq!(a.ports, ["80", "443"]);
    let HelperCommand::CacheInit(a) = parse(&["cache-init", "/cache"]) else {
        panic!("not cache-init")
    };
    assert_eq!(a.paths, [std::path::PathBuf::from("/cache")]);
}

/// A flag no gitlab-runner helper has is a usage error, as urfave/cli makes it.
#[test]
fn unknown_flags_are_refused() {
    assert!(Cli::try_parse_from(["h", "cache-extractor", "--no-such-flag"]).is_err());
}
