//! The S3 distributed cache (protocol.md §6.4, §8.3). As in GitLab's runner, the runner process
//! holds the credentials and presigns `GET`, `HEAD` and `PUT` URLs for one object per cache key;
//! the transfers ([`download`], [`upload`]) then need nothing but those URLs, so they can run
//! wherever the job's files are. Listing and deleting (for `cache list`/`cache clear`) go through
//! the S3 API with the runner's credentials.
//!
//! Object names are `<Path>/runner/<short token>/project/<id>/<key>` (no `runner/…` part when
//! `Shared`), with no `cache.zip` suffix; with `FF_HASH_CACHE_KEYS` the hashed key is sharded under its first
//! two characters, `…/project/<id>/<hash[0:2]>/<hash>` (runner `cache/cache.go` `GetAdapter`).
//!
//! Requests are addressed as GitLab's runner addresses them (`s3_endpoint`): path or virtual-host style,
//! AWS's dual-stack and accelerate hosts. Without `BucketLocation` the region is asked of the bucket
//! (`GetBucketLocation`) the first time the cache is used, as GitLab's runner does for every job
//! (runner cache/s3v2/s3.go `detectBucketLocation`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer};
use object_store::path::Path as ObjectPath;
use object_store::signer::{HeaderName, HeaderValue, Method, SignedUrlOptions, Signer};
use object_store::{ObjectStore, ObjectStoreExt};
use reqwest::header;
use runwright_config::{CacheConfig, CacheType, S3AuthType};
use tokio::io::AsyncWriteExt;
use url::Url;

use crate::error::{strip_query, Error, Result};
use crate::gopath;
use crate::local::parent_dir;
use crate::s3_endpoint;

/// The metadata header carrying the human cache key on uploads (GitLab: `--header
/// "x-amz-meta-cachekey: …"`); S3 gives it back on `GET` and `HEAD`.
pub const CACHE_KEY_HEADER: &str = "x-amz-meta-cachekey";

/// The region when `BucketLocation` is empty and the bucket does not say (runner cache/s3v2/s3.go
/// `fallbackBucketLocation`).
const DEFAULT_REGION: &str = "us-east-1";

/// SigV4 presigned URLs are valid for at most seven days; S3 refuses longer ones outright, so a
/// longer job timeout is clamped rather than producing URLs that never work.
pub const MAX_PRESIGN_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

/// One runner's S3 cache: a bucket, credentials and the object-name prefix.
#[derive(Clone)]
pub struct S3Cache {
    connection: Arc<Connection>,
    bucket: String,
    /// `Path` cleaned, plus `runner/<short token>` unless shared; may be empty.
    namespace: String,
    max_uploaded_archive_size: i64,
}

impl std::fmt::Debug for S3Cache {
    // Credentials live inside `connection`; only the names are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Cache")
            .field("bucket", &self.bucket)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// An object found by [`S3Cache::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Object {
    /// The full object name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// S3's `LastModified`.
    pub last_modified: SystemTime,
}

/// The client of one bucket: what builds it, and the client itself once its region is known.
struct Connection {
    s3: runwright_config::CacheS3Config,
    bucket: String,
    auth: S3AuthType,
    /// Built with `BucketLocation`, or `us-east-1` until the bucket says where it is: checks the settings at
    /// once and gives the credentials (keys, or IAM's) for the location request.
    first: Arc<AmazonS3>,
    /// The client in the bucket's region.
    store: tokio::sync::OnceCell<Arc<AmazonS3>>,
}

/// An object_store client for `bucket` in `region`, addressed as GitLab's runner addresses it.
fn build_store(
    s3: &runwright_config::CacheS3Config,
    bucket: &str,
    auth: S3AuthType,
    region: &str,
) -> Result<AmazonS3> {
    let address = s3_endpoint::addressing(s3, bucket, region)
        .map_err(|e| Error::Config(format!("[runners.cache.s3]: {e}; caches stay local")))?;
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(region)
        .with_virtual_hosted_style_request(address.virtual_hosted)
        .with_allow_http(address.endpoint.starts_with("http://"))
        // object_store takes a virtual-hosted endpoint with the bucket already in it.
        .with_endpoint(address.endpoint);
    if auth == S3AuthType::AccessKey {
        let (Some(access_key), Some(secret_key)) =
            (non_empty(&s3.access_key), non_empty(&s3.secret_key))
        else {
            return Err(Error::Config(
                "[runners.cache.s3] AuthenticationType = \"access-key\" needs AccessKey and \
                     SecretKey: set both, or use AuthenticationType = \"iam\""
                    .to_owned(),
            ));
        };
        builder = builder
            .with_access_key_id(access_key)
            .with_secret_access_key(secret_key);
        if let Some(token) = non_empty(&s3.session_token) {
            builder = builder.with_token(token);
        }
    }
    // With IAM and no keys object_store asks the instance metadata service (or the ECS
    // container endpoint) for credentials when it first signs, as the AWS SDK does.
    builder.build().map_err(|source| Error::S3 {
        bucket: bucket.to_owned(),
        operation: "configuring the client".to_owned(),
        source,
    })
}

impl Connection {
    /// The client in the bucket's region: `BucketLocation`, else what the bucket says (once per cache).
    async fn store(&self) -> Result<&Arc<AmazonS3>> {
        self.store
            .get_or_try_init(|| async {
                let region = self.detect_region().await;
                build_store(&self.s3, &self.bucket, self.auth, &region).map(Arc::new)
            })
            .await
    }

    /// runner cache/s3v2/s3.go `detectBucketLocation`: `GetBucketLocation` with the configured credentials,
    /// 30 s at most; any failure falls back to `us-east-1` with a warning.
    async fn detect_region(&self) -> String {
        match tokio::time::timeout(Duration::from_secs(30), self.bucket_location()).await {
            Ok(Ok(region)) => {
                tracing::debug!(bucket = %self.bucket, location = %region, "Successfully detected S3 bucket location");
                region
            }
            Ok(Err(e)) => {
                tracing::warn!(bucket = %self.bucket, "Failed to detect S3 bucket location, falling back to default region {DEFAULT_REGION}: {e}");
                DEFAULT_REGION.to_owned()
            }
            Err(_) => {
                tracing::warn!(bucket = %self.bucket, "Failed to detect S3 bucket location within 30s, falling back to default region {DEFAULT_REGION}");
                DEFAULT_REGION.to_owned()
            }
        }
    }

    async fn bucket_location(&self) -> std::result::Result<String, String> {
        let url = s3_endpoint::location_url(&self.s3, &self.bucket, DEFAULT_REGION)?;
        let credential = self
            .first
            .credentials()
            .get_credential()
            .await
            .map_err(|e| format!("getting credentials: {e}"))?;
        // object_store's signer would panic on a token that cannot be a header value.
        if credential
            .token
            .as_deref()
            .is_some_and(|t| HeaderValue::from_str(t).is_err())
        {
            return Err("SessionToken is not a valid HTTP header value".to_owned());
        }
        let mut request = http::Request::builder()
            .method(Method::GET)
            .uri(url.as_str())
            .body(object_store::client::HttpRequestBody::empty())
            .map_err(|e| format!("building the request: {e}"))?;
        AwsAuthorizer::new(&credential, "s3", DEFAULT_REGION)
            .try_authorize(&mut request, None)
            .map_err(|e| format!("signing the request: {e}"))?;
        let response = reqwest::Client::new()
            .get(url.as_str())
            .headers(request.headers().clone())
            .send()
            .await
            .map_err(|e| format!("GET {}: {e}", strip_query(&url)))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if !status.is_success() {
            let code = xml_field(&body, "Code").unwrap_or_default();
            return Err(format!("GET {}: {status} {code}", strip_query(&url)));
        }
        s3_endpoint::parse_location(&body, DEFAULT_REGION).ok_or_else(|| {
            format!(
                "GET {}: no LocationConstraint in the answer",
                strip_query(&url)
            )
        })
    }
}

impl S3Cache {
    /// The S3 cache of `[runners.cache]`, or `None` when `Type` is empty (caches stay local).
    ///
    /// `gcs` and `azure`, `RoleARN`/`UploadRoleARN` and server-side encryption give
    /// [`Error::Unsupported`], which callers print as a warning; a missing `BucketName` or missing
    /// keys give [`Error::Config`].
    pub fn new(cfg: &CacheConfig, short_token: &str) -> Result<Option<S3Cache>> {
        match cfg.cache_type {
            None => return Ok(None),
            Some(t @ (CacheType::Gcs | CacheType::Azure)) => {
                return Err(Error::Unsupported(format!("Type = {:?}", t.as_str())))
            }
            Some(CacheType::S3) => {}
        }
        let s3 = cfg.s3.as_ref().ok_or_else(|| {
            Error::Config(
                "Type = \"s3\" needs a [runners.cache.s3] section with BucketName: add it, or set \
                 Type = \"\" to keep caches local"
                    .to_owned(),
            )
        })?;
        let bucket = non_empty(&s3.bucket_name).ok_or_else(|| {
            Error::Config(
                "[runners.cache.s3] BucketName is missing: set it, or set Type = \"\" to keep \
                 caches local"
                    .to_owned(),
            )
        })?;
        if non_empty(&s3.role_arn).is_some() || non_empty(&s3.upload_role_arn).is_some() {
            return Err(Error::Unsupported(
                "[runners.cache.s3] RoleARN/UploadRoleARN".to_owned(),
            ));
        }
        if non_empty(&s3.server_side_encryption).is_some() {
            // The encryption headers would have to be signed into every PUT and sent by the
            // uploader; silently storing unencrypted archives is worse than no cache.
            return Err(Error::Unsupported(
                "[runners.cache.s3] ServerSideEncryption".to_owned(),
            ));
        }

        let server = non_empty(&s3.server_address);
        let access_key = non_empty(&s3.access_key);
        let secret_key = non_empty(&s3.secret_key);
        // GitLab's default: IAM unless address and both keys are set
        // (runner common/config.go `CacheS3Config.AuthType`).
        let auth = s3.authentication_type.unwrap_or(
            if server.is_some() && access_key.is_some() && secret_key.is_some() {
                S3AuthType::AccessKey
            } else {
                S3AuthType::Iam
            },
        );
        let configured = non_empty(&s3.bucket_location);
        let first = Arc::new(build_store(
            s3,
            bucket,
            auth,
            configured.unwrap_or(DEFAULT_REGION),
        )?);
        let connection = Connection {
            s3: s3.clone(),
            bucket: bucket.to_owned(),
            auth,
            store: tokio::sync::OnceCell::new_with(configured.is_some().then(|| first.clone())),
            first,
        };

        let runner_segment = if cfg.shared {
            String::new()
        } else {
            gopath::join(&["runner", short_token])
        };
        let namespace = gopath::join(&[cfg.path.as_deref().unwrap_or(""), &runner_segment]);
        Ok(Some(S3Cache {
            connection: Arc::new(connection),
            bucket: bucket.to_owned(),
            namespace,
            max_uploaded_archive_size: cfg.max_uploaded_archive_size,
        }))
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `MaxUploadedArchiveSize`; zero or less means no limit.
    pub fn max_uploaded_archive_size(&self) -> i64 {
        self.max_uploaded_archive_size
    }

    /// `<Path>/runner/<short token>` (or `<Path>` when shared): everything of this runner's
    /// caches lives under `<this>/project/`.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `<namespace>/project/<project id>`, the prefix of one project's objects.
    pub fn project_prefix(&self, project_id: i64) -> String {
        gopath::join(&[&self.namespace, "project", &project_id.to_string()])
    }

    /// The object name of a storage key (§6.4). With `sharded` (`FF_HASH_CACHE_KEYS`, where the
    /// key is a SHA-256) the key's first two characters come in between, spreading a project's
    /// objects over 256 prefixes as GitLab Runner 19.x does (runner cache/cache.go `GetAdapter`).
    /// Keys that leave the project's prefix (`../10`, `../10-outside`) are refused, which disables
    /// caching for that key as in GitLab.
    pub fn object_name(&self, project_id: i64, key: &str, sharded: bool) -> Result<String> {
        let base = self.project_prefix(project_id);
        if key.is_empty() {
            return Err(Error::ObjectName {
                key: key.to_owned(),
                reason: "empty cache key: the cache is skipped".to_owned(),
            });
        }
        let full = if sharded {
            let Some(shard) = key.get(..2).filter(|_| key.len() >= 2) else {
                return Err(Error::ObjectName {
                    key: key.to_owned(),
                    reason: format!(
                        "cache key too short to shard (length {}): the cache is skipped",
                        key.len()
                    ),
                });
            };
            gopath::join(&[&base, shard, key])
        } else {
            gopath::join(&[&base, key])
        };
        if !full.starts_with(&format!("{base}/")) {
            return Err(Error::ObjectName {
                key: key.to_owned(),
                reason: "computed cache path outside of project bucket. Please remove `../` \
                         from cache key"
                    .to_owned(),
            });
        }
        Ok(full)
    }

    /// A URL to `GET` the object, valid for `expires` (at most [`MAX_PRESIGN_VALIDITY`]).
    pub async fn presign_get(&self, object: &str, expires: Duration) -> Result<Url> {
        self.presign(Method::GET, object, expires, SignedUrlOptions::default())
            .await
    }

    /// A URL to `HEAD` the object (existence and `Last-Modified`), valid for `expires`.
    pub async fn presign_head(&self, object: &str, expires: Duration) -> Result<Url> {
        self.presign(Method::HEAD, object, expires, SignedUrlOptions::default())
            .await
    }

    /// A URL to `PUT` the object, valid for `expires`. The `x-amz-meta-cachekey: <human key>`
    /// header is part of the signature, so [`upload`] must be given the same human key (GitLab
    /// presigns its metadata the same way). A human key that is not printable ASCII is left out
    /// of the metadata: S3 cannot store it as a header value.
    pub async fn presign_put(
        &self,
        object: &str,
        expires: Duration,
        human_key: &str,
    ) -> Result<Url> {
        let mut options = SignedUrlOptions::default();
        if let Some(value) = metadata_value(human_key) {
            options = options.with_signed_header(HeaderName::from_static(CACHE_KEY_HEADER), value);
        }
        self.presign(Method::PUT, object, expires, options).await
    }

    async fn presign(
        &self,
        method: Method,
        object: &str,
        expires: Duration,
        options: SignedUrlOptions,
    ) -> Result<Url> {
        let path = self.object_path(object)?;
        let expires = expires.min(MAX_PRESIGN_VALIDITY);
        self.connection
            .store()
            .await?
            .signed_url_opts(method.clone(), &path, expires, &options)
            .await
            .map_err(|source| Error::S3 {
                bucket: self.bucket.clone(),
                operation: format!("presigning {method} {object}"),
                source,
            })
    }

    /// Every object whose name starts with `<prefix>/`, with size and last-modified time.
    pub async fn list(&self, prefix: &str) -> Result<Vec<S3Object>> {
        let path = self.object_path(prefix)?;
        let stream = self.connection.store().await?.list(Some(&path));
        let metas: Vec<object_store::ObjectMeta> =
            stream.try_collect().await.map_err(|source| Error::S3 {
                bucket: self.bucket.clone(),
                operation: format!("listing {prefix}/"),
                source,
            })?;
        Ok(metas
            .into_iter()
            .map(|m| S3Object {
                name: m.location.to_string(),
                size: m.size,
                last_modified: SystemTime::from(m.last_modified),
            })
            .collect())
    }

    /// Deletes one object. Deleting an object that is already gone succeeds, as in S3.
    pub async fn delete(&self, object: &str) -> Result<()> {
        let path = self.object_path(object)?;
        match self.connection.store().await?.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(Error::S3 {
                bucket: self.bucket.clone(),
                operation: format!("deleting {object}"),
                source,
            }),
        }
    }

    fn object_path(&self, object: &str) -> Result<ObjectPath> {
        // `parse` keeps the name as is (no percent-encoding of `%` or spaces), so the object is
        // the one GitLab's runner names; it refuses control characters and empty segments.
        ObjectPath::parse(object).map_err(|e| Error::ObjectName {
            key: object.to_owned(),
            reason: format!(
                "cannot be an S3 object name ({e}): use a cache key without control characters"
            ),
        })
    }
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn metadata_value(human_key: &str) -> Option<HeaderValue> {
    if human_key.is_empty() || !human_key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return None;
    }
    HeaderValue::from_str(human_key).ok()
}

/// An HTTP client for [`download`] and [`upload`]; `timeout` bounds each whole request, as
/// GitLab's `--timeout` (`CACHE_REQUEST_TIMEOUT`, 10 minutes by default) does.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| Error::http("GET", "(no request yet: building the HTTP client)", e))
}

/// What [`download`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadResult {
    /// There is no such object: no cache yet, not an error.
    NotFound,
    /// The local file is at least as new as the remote object; nothing was fetched.
    UpToDate {
        /// The remote `Last-Modified`.
        last_modified: SystemTime,
    },
    /// The object was written to the local path.
    Downloaded {
        /// Bytes written.
        size: u64,
        /// The remote `Last-Modified`, now also the local file's mtime.
        last_modified: Option<SystemTime>,
        /// `x-amz-meta-*` headers, keys lowercased without the prefix (`cachekey` → human
        /// key): what GitLab's helper writes into `metadata.json` after a download.
        metadata: BTreeMap<String, String>,
    },
}

/// Restores `local` from presigned URLs (GitLab's `cache-extractor`): `HEAD` first; a 404 is
/// [`DownloadResult::NotFound`]; when `local`'s mtime is at least the remote `Last-Modified` the
/// `GET` is skipped (§6.3); otherwise the body is streamed to a temporary file beside `local`,
/// given the remote time as mtime and renamed into place.
///
/// Unlike GitLab, a remote object without `Last-Modified` is always fetched (GitLab treats it as
/// up to date). Retries are the caller's.
pub async fn download(
    client: &reqwest::Client,
    get_url: &str,
    head_url: &str,
    local: &Path,
) -> Result<DownloadResult> {
    download_from(client, get_url, Some(head_url), local).await
}

/// [`download`] with the `HEAD` request optional, as the helper's `cache-extractor` has it (`--head-url`
/// may be left out; runner commands/helpers/cache_extractor.go `downloadPresignedSequential`): without one,
/// the `GET` is sent straight away and its `Last-Modified` decides whether the local copy is current (the
/// body is then dropped unread).
pub async fn download_from(
    client: &reqwest::Client,
    get_url: &str,
    head_url: Option<&str>,
    local: &Path,
) -> Result<DownloadResult> {
    let mut head_modified = None;
    if let Some(head_url) = head_url {
        let head = client
            .head(head_url)
            .send()
            .await
            .map_err(|e| Error::http("HEAD", head_url, e))?;
        if head.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(DownloadResult::NotFound);
        }
        let head = check_status("HEAD", head_url, head).await?;
        head_modified = last_modified(head.headers());
        if let Some(remote) = head_modified {
            if local_is_current(local, remote) {
                return Ok(DownloadResult::UpToDate {
                    last_modified: remote,
                });
            }
        }
    }

    let response = client
        .get(get_url)
        .send()
        .await
        .map_err(|e| Error::http("GET", get_url, e))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        // No such object (or deleted between HEAD and GET).
        return Ok(DownloadResult::NotFound);
    }
    let response = check_status("GET", get_url, response).await?;
    let remote_modified = last_modified(response.headers()).or(head_modified);
    if head_url.is_none() {
        if let Some(remote) = remote_modified {
            if local_is_current(local, remote) {
                return Ok(DownloadResult::UpToDate {
                    last_modified: remote,
                });
            }
        }
    }
    let metadata = amz_metadata(response.headers());

    let dir = parent_dir(local)?;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| Error::io(dir, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-cache-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    let std_file = tmp
        .as_file()
        .try_clone()
        .map_err(|e| Error::io(tmp.path(), e))?;
    let mut file = tokio::fs::File::from_std(std_file);
    let mut size = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(|e| Error::http("GET", get_url, e))?
    {
        file.write_all(&chunk)
            .await
            .map_err(|e| Error::io(tmp.path(), e))?;
        size += chunk.len() as u64;
    }
    file.flush().await.map_err(|e| Error::io(tmp.path(), e))?;
    let std_file = file.into_std().await;
    if let Some(time) = remote_modified {
        std_file
            .set_modified(time)
            .map_err(|e| Error::io(tmp.path(), e))?;
    }
    std_file.sync_all().map_err(|e| Error::io(tmp.path(), e))?;
    drop(std_file);
    tmp.persist(local).map_err(|e| Error::io(local, e.error))?;
    Ok(DownloadResult::Downloaded {
        size,
        last_modified: remote_modified,
        metadata,
    })
}

/// The local file exists and its mtime is at least the remote `Last-Modified` (runner
/// commands/helpers/cache_extractor.go `isLocalCacheFileUpToDate`, which `lstat`s it).
fn local_is_current(local: &Path, remote: SystemTime) -> bool {
    std::fs::symlink_metadata(local)
        .and_then(|m| m.modified())
        .is_ok_and(|m| m >= remote)
}

/// What [`upload`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadResult {
    /// The archive was stored.
    Uploaded {
        /// Bytes sent.
        size: u64,
    },
    /// The archive is bigger than `MaxUploadedArchiveSize` and stays local only.
    TooLarge {
        /// The archive's size in bytes.
        size: u64,
        /// `MaxUploadedArchiveSize` in bytes.
        max: u64,
    },
}

/// Stores `local` through a presigned `PUT` URL (GitLab's `cache-archiver`): a plain `PUT`
/// streamed from the file with `Content-Type: application/octet-stream`, `Content-Length`,
/// `x-amz-meta-cachekey: <human key>` (see [`S3Cache::presign_put`]) and `Last-Modified` = the
/// archive's mtime. With `max_uploaded_archive_size` > 0, a bigger archive is not sent.
pub async fn upload(
    client: &reqwest::Client,
    put_url: &str,
    local: &Path,
    human_key: &str,
    max_uploaded_archive_size: i64,
) -> Result<UploadResult> {
    let size = tokio::fs::metadata(local)
        .await
        .map_err(|e| Error::io(local, e))?
        .len();
    if let Ok(max) = u64::try_from(max_uploaded_archive_size) {
        if max > 0 && size > max {
            return Ok(UploadResult::TooLarge { size, max });
        }
    }
    let headers: Vec<(String, String)> = metadata_value(human_key)
        .and_then(|v| v.to_str().ok().map(str::to_owned))
        .map(|v| (CACHE_KEY_HEADER.to_owned(), v))
        .into_iter()
        .collect();
    let size = upload_with_headers(client, put_url, local, &headers).await?;
    Ok(UploadResult::Uploaded { size })
}

/// Stores `local` through a presigned `PUT` URL with the given request headers, as the helper's
/// `cache-archiver --header 'Name: value'` sends them (runner commands/helpers/cache_archiver.go
/// `setHeaders`): the given ones first, then `Content-Type: application/octet-stream` unless one was given,
/// `Last-Modified` = the archive's mtime, and `Content-Length`. The body is streamed from the file.
/// Returns the bytes sent. A header that is no valid HTTP header is an error naming it (never its value).
pub async fn upload_with_headers(
    client: &reqwest::Client,
    put_url: &str,
    local: &Path,
    headers: &[(String, String)],
) -> Result<u64> {
    let file = tokio::fs::File::open(local)
        .await
        .map_err(|e| Error::io(local, e))?;
    let meta = file.metadata().await.map_err(|e| Error::io(local, e))?;
    let size = meta.len();
    let mut map = header::HeaderMap::new();
    for (name, value) in headers {
        let name = header::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| Error::Header(format!("{:?}: not a valid header name", name.trim())))?;
        let value = header::HeaderValue::from_str(value.trim())
            .map_err(|_| Error::Header(format!("{name}: the value is not a valid header value")))?;
        map.insert(name, value);
    }
    if !map.contains_key(header::CONTENT_TYPE) {
        map.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/octet-stream"),
        );
    }
    if let Ok(mtime) = meta.modified() {
        if let Ok(v) = header::HeaderValue::from_str(&httpdate::fmt_http_date(mtime)) {
            map.insert(header::LAST_MODIFIED, v);
        }
    }
    map.insert(header::CONTENT_LENGTH, header::HeaderValue::from(size));
    let request = client
        .put(put_url)
        .headers(map)
        // A stream of the file: the archive is never held in memory.
        .body(reqwest::Body::wrap_stream(
            tokio_util::io::ReaderStream::new(file),
        ));
    let response = request
        .send()
        .await
        .map_err(|e| Error::http("PUT", put_url, e))?;
    check_status("PUT", put_url, response).await?;
    Ok(size)
}

/// The response on success; on any other status an [`Error::Status`] with S3's error code
/// and message (never the rest of the body: `SignatureDoesNotMatch` bodies echo the signature).
async fn check_status(
    method: &'static str,
    url: &str,
    response: reqwest::Response,
) -> Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    let detail = match (xml_field(&body, "Code"), xml_field(&body, "Message")) {
        (Some(code), Some(message)) => format!(": {code}: {message}"),
        (Some(code), None) => format!(": {code}"),
        _ => String::new(),
    };
    Err(Error::Status {
        method,
        url: strip_query(url),
        status: status.as_u16(),
        detail,
    })
}

fn xml_field(body: &str, name: &str) -> Option<String> {
    let start = body.find(&format!("<{name}>"))? + name.len() + 2;
    let len = body[start..].find(&format!("</{name}>"))?;
    let value: String = body[start..start + len].chars().take(300).collect();
    Some(value)
}

fn last_modified(headers: &header::HeaderMap) -> Option<SystemTime> {
    let value = headers.get(header::LAST_MODIFIED)?.to_str().ok()?;
    httpdate::parse_http_date(value).ok()
}

fn amz_metadata(headers: &header::HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            let key = name.as_str().strip_prefix("x-amz-meta-")?;
            Some((key.to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use runwright_config::CacheS3Config;

    fn config(shared: bool, path: Option<&str>) -> CacheConfig {
        CacheConfig {
            cache_type: Some(CacheType::S3),
            path: path.map(str::to_owned),
            shared,
            s3: Some(CacheS3Config {
                server_address: Some("127.0.0.1:9000".to_owned()),
                access_key: Some("AKIAEXAMPLE".to_owned()),
                secret_key: Some("secret-example".to_owned()),
                bucket_name: Some("runner-cache".to_owned()),
                insecure: true,
                ..CacheS3Config::default()
            }),
            ..CacheConfig::default()
        }
    }

    fn cache(shared: bool, path: Option<&str>) -> S3Cache {
        S3Cache::new(&config(shared, path), "longtoken")
            .expect("valid config")
            .expect("s3 configured")
    }

    #[test]
    fn object_names_as_gitlab() {
        // runner cache/cache_test.go `TestGenerateObjectName`.
        let c = cache(false, None);
        assert_eq!(
            c.object_name(10, "key", false).unwrap(),
            "runner/longtoken/project/10/key"
        );
        assert_eq!(
            cache(false, Some("whatever"))
                .object_name(10, "key", false)
                .unwrap(),
            "whatever/runner/longtoken/project/10/key"
        );
        assert_eq!(
            cache(false, Some("some/other/path/goes/here"))
                .object_name(10, "key", false)
                .unwrap(),
            "some/other/path/goes/here/runner/longtoken/project/10/key"
        );
        assert_eq!(
            cache(true, None).object_name(10, "key", false).unwrap(),
            "project/10/key"
        );
        assert_eq!(
            c.object_name(10, "../10/key", false).unwrap(),
            "runner/longtoken/project/10/key"
        );
        for bad in ["../10", "../10-outside", ""] {
            let err = c.object_name(10, bad, false).unwrap_err();
            assert!(matches!(err, Error::ObjectName { .. }), "{bad:?}: {err}");
        }
        let err = c
            .object_name(10, "../10-outside", false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("remove `../`"), "{err}");
    }

    #[test]
    fn hashed_keys_are_sharded_as_gitlab_runner_19_does() {
        // runner cache/cache_test.go: `<base>/<key[0:2]>/<key>` when sharded.
        let hash = crate::key::hashed("build/main");
        let c = cache(false, Some("pre"));
        assert_eq!(
            c.object_name(10, &hash, true).unwrap(),
            format!("pre/runner/longtoken/project/10/{}/{hash}", &hash[..2])
        );
        assert_eq!(
            cache(true, None).object_name(10, &hash, true).unwrap(),
            format!("project/10/{}/{hash}", &hash[..2])
        );
        let err = c.object_name(10, "a", true).unwrap_err().to_string();
        assert!(err.contains("too short to shard"), "{err}");
    }

    #[test]
    fn no_type_is_no_cache_and_other_types_are_unsupported() {
        assert!(S3Cache::new(&CacheConfig::default(), "t")
            .unwrap()
            .is_none());
        for t in [CacheType::Gcs, CacheType::Azure] {
            let cfg = CacheConfig {
                cache_type: Some(t),
                ..CacheConfig::default()
            };
            let err = S3Cache::new(&cfg, "t").unwrap_err();
            assert!(matches!(err, Error::Unsupported(_)));
            assert!(err.to_string().contains("not supported yet"), "{err}");
        }
    }

    #[test]
    fn missing_bucket_or_keys_say_what_to_set() {
        let mut cfg = config(false, None);
        if let Some(s3) = cfg.s3.as_mut() {
            s3.bucket_name = None;
        }
        let err = S3Cache::new(&cfg, "t").unwrap_err().to_string();
        assert!(err.contains("BucketName is missing"), "{err}");

        let mut cfg = config(false, None);
        if let Some(s3) = cfg.s3.as_mut() {
            s3.secret_key = None;
            s3.authentication_type = Some(S3AuthType::AccessKey);
        }
        let err = S3Cache::new(&cfg, "t").unwrap_err().to_string();
        assert!(err.contains("needs AccessKey and SecretKey"), "{err}");
    }

    #[tokio::test]
    async fn presigned_urls_point_at_the_object_and_keep_secrets_out_of_debug() {
        let c = cache(false, Some("pre"));
        let object = c.object_name(5, "build/main", false).unwrap();
        let url = c
            .presign_put(&object, Duration::from_secs(600), "build/main")
            .await
            .unwrap();
        assert_eq!(url.scheme(), "http");
        assert_eq!(url.host_str(), Some("127.0.0.1"));
        assert_eq!(url.port(), Some(9000));
        assert_eq!(
            url.path(),
            "/runner-cache/pre/runner/longtoken/project/5/build/main"
        );
        let query: BTreeMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(query.get("X-Amz-Expires").map(String::as_str), Some("600"));
        assert_eq!(
            query.get("X-Amz-SignedHeaders").map(String::as_str),
            Some("host;x-amz-meta-cachekey")
        );
        assert!(query
            .get("X-Amz-Credential")
            .is_some_and(|c| c.starts_with("AKIAEXAMPLE/") && c.contains("/us-east-1/s3/")));

        let get = c
            .presign_get(&object, Duration::from_secs(30 * 24 * 3600))
            .await
            .unwrap();
        let query: BTreeMap<_, _> = get.query_pairs().into_owned().collect();
        assert_eq!(
            query.get("X-Amz-Expires").map(String::as_str),
            Some("604800")
        );

        let debug = format!("{c:?}");
        assert!(
            !debug.contains("secret-example") && !debug.contains("AKIAEXAMPLE"),
            "{debug}"
        );
    }

    #[tokio::test]
    async fn virtual_hosted_style_and_region() {
        let mut cfg = config(true, None);
        if let Some(s3) = cfg.s3.as_mut() {
            s3.server_address = Some("minio.example.test".to_owned());
            s3.path_style = Some(false);
            s3.insecure = false;
            s3.bucket_location = Some("eu-west-1".to_owned());
        }
        let c = S3Cache::new(&cfg, "t").unwrap().unwrap();
        let url = c
            .presign_get("project/1/k", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(url.scheme(), "https");
        assert_eq!(url.host_str(), Some("runner-cache.minio.example.test"));
        assert_eq!(url.path(), "/project/1/k");
        assert!(
            url.as_str().contains("%2Feu-west-1%2Fs3%2F"),
            "{}",
            strip_query(url.as_str())
        );
    }

    #[test]
    fn s3_error_bodies_yield_code_and_message_only() {
        let body = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>\
                    <Message>The request signature we calculated does not match</Message>\
                    <SignatureProvided>deadbeef</SignatureProvided></Error>";
        assert_eq!(
            xml_field(body, "Code").as_deref(),
            Some("SignatureDoesNotMatch")
        );
        assert_eq!(xml_field(body, "Nope"), None);
    }
}
