//! Presigned transfers against moto: what the runner's cache stages do.

use std::time::{Duration, SystemTime};

use runwright_cache::s3::{http_client, CACHE_KEY_HEADER};
use runwright_cache::{download, upload, DownloadResult, Error, UploadResult};

use crate::support::*;
use runwright_cache::testing::MotoServer;

struct Urls {
    get: String,
    head: String,
    put: String,
}

async fn urls(cache: &runwright_cache::S3Cache, project: i64, key: &str) -> Urls {
    let object = cache.object_name(project, key, false).expect("object name");
    Urls {
        get: cache
            .presign_get(&object, VALIDITY)
            .await
            .expect("presign GET")
            .to_string(),
        head: cache
            .presign_head(&object, VALIDITY)
            .await
            .expect("presign HEAD")
            .to_string(),
        put: cache
            .presign_put(&object, VALIDITY, key)
            .await
            .expect("presign PUT")
            .to_string(),
    }
}

fn client() -> reqwest::Client {
    http_client(Duration::from_secs(60)).expect("client")
}

#[tokio::test]
async fn put_then_head_then_get_round_trip() {
    let moto = moto();
    let cache = s3_cache(&moto.cache_config(BUCKET));
    let urls = urls(&cache, 42, "build/main-1-non_protected").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("up/cache.zip");
    // Bigger than any single read buffer, so streaming is exercised in both directions.
    let bytes = content(3 * 1024 * 1024 + 17);
    write_file(&archive, &bytes);

    let up = upload(
        &client(),
        &urls.put,
        &archive,
        "build/main-1-non_protected",
        0,
    )
    .await
    .expect("upload");
    assert_eq!(
        up,
        UploadResult::Uploaded {
            size: bytes.len() as u64
        }
    );

    let restored = dir
        .path()
        .join("down/group/proj/build/main-1-non_protected/cache.zip");
    let down = download(&client(), &urls.get, &urls.head, &restored)
        .await
        .expect("download");
    let DownloadResult::Downloaded {
        size,
        last_modified,
        metadata,
    } = down
    else {
        panic!("expected a download, got {down:?}");
    };
    assert_eq!(size, bytes.len() as u64);
    assert_eq!(std::fs::read(&restored).expect("read restored"), bytes);
    assert_eq!(
        metadata.get("cachekey").map(String::as_str),
        Some("build/main-1-non_protected"),
        "{CACHE_KEY_HEADER} comes back as metadata"
    );
    let last_modified = last_modified.expect("S3 sends Last-Modified");
    assert_eq!(
        mtime(&restored),
        last_modified,
        "local mtime is the remote time"
    );
    // Only the archive is left in the directory: the temporary file was renamed.
    let names: Vec<_> = std::fs::read_dir(restored.parent().expect("parent"))
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["cache.zip"]);
}

#[tokio::test]
async fn download_is_skipped_while_the_local_copy_is_current() {
    let moto = moto();
    let cache = s3_cache(&moto.cache_config(BUCKET));
    let urls = urls(&cache, 1, "deps").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("cache.zip");
    write_file(&archive, b"remote version");
    upload(&client(), &urls.put, &archive, "deps", 0)
        .await
        .expect("upload");

    let local = dir.path().join("local/cache.zip");
    let first = download(&client(), &urls.get, &urls.head, &local)
        .await
        .expect("first");
    assert!(
        matches!(first, DownloadResult::Downloaded { .. }),
        "{first:?}"
    );

    // Same mtime as Last-Modified: up to date; a local change is kept.
    write_file(&local, b"local edit");
    if let DownloadResult::Downloaded {
        last_modified: Some(t),
        ..
    } = first
    {
        set_mtime(&local, t);
    }
    let second = download(&client(), &urls.get, &urls.head, &local)
        .await
        .expect("second");
    assert!(
        matches!(second, DownloadResult::UpToDate { .. }),
        "{second:?}"
    );
    assert_eq!(std::fs::read(&local).expect("read"), b"local edit");

    // Newer local copy: still up to date.
    set_mtime(&local, SystemTime::now() + Duration::from_secs(3600));
    let third = download(&client(), &urls.get, &urls.head, &local)
        .await
        .expect("third");
    assert!(
        matches!(third, DownloadResult::UpToDate { .. }),
        "{third:?}"
    );

    // Older local copy: fetched again.
    set_mtime(
        &local,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
    );
    let fourth = download(&client(), &urls.get, &urls.head, &local)
        .await
        .expect("fourth");
    assert!(
        matches!(fourth, DownloadResult::Downloaded { .. }),
        "{fourth:?}"
    );
    assert_eq!(std::fs::read(&local).expect("read"), b"remote version");
}

#[tokio::test]
async fn a_missing_key_is_not_found_not_an_error() {
    let moto = moto();
    let cache = s3_cache(&moto.cache_config(BUCKET));
    let urls = urls(&cache, 1, "never-uploaded").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let local = dir.path().join("cache.zip");
    let result = download(&client(), &urls.get, &urls.head, &local)
        .await
        .expect("download");
    assert_eq!(result, DownloadResult::NotFound);
    assert!(!local.exists());
}

#[tokio::test]
async fn archives_over_max_uploaded_archive_size_stay_local() {
    let moto = moto();
    let mut cfg = moto.cache_config(BUCKET);
    cfg.max_uploaded_archive_size = 1000;
    let cache = s3_cache(&cfg);
    assert_eq!(cache.max_uploaded_archive_size(), 1000);
    let urls = urls(&cache, 1, "big").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("cache.zip");

    write_file(&archive, &content(1001));
    let result = upload(
        &client(),
        &urls.put,
        &archive,
        "big",
        cache.max_uploaded_archive_size(),
    )
    .await
    .expect("upload");
    assert_eq!(
        result,
        UploadResult::TooLarge {
            size: 1001,
            max: 1000
        }
    );
    let local = dir.path().join("restored.zip");
    let down = download(&client(), &urls.get, &urls.head, &local)
        .await
        .expect("download");
    assert_eq!(down, DownloadResult::NotFound, "nothing was sent");

    // At the limit it goes; zero or negative means no limit.
    write_file(&archive, &content(1000));
    let result = upload(&client(), &urls.put, &archive, "big", 1000)
        .await
        .expect("upload");
    assert_eq!(result, UploadResult::Uploaded { size: 1000 });
    write_file(&archive, &content(5000));
    for max in [0, -1] {
        let result = upload(&client(), &urls.put, &archive, "big", max)
            .await
            .expect("upload");
        assert_eq!(result, UploadResult::Uploaded { size: 5000 });
    }
}

#[tokio::test]
async fn shared_caches_have_no_runner_segment() {
    let moto = moto();
    let mut cfg = moto.cache_config(BUCKET);
    cfg.path = Some("ci".to_owned());
    let own = s3_cache(&cfg);
    cfg.shared = true;
    let shared = s3_cache(&cfg);
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("cache.zip");
    write_file(&archive, b"x");
    for cache in [&own, &shared] {
        let urls = urls(cache, 7, "k/1").await;
        upload(&client(), &urls.put, &archive, "k/1", 0)
            .await
            .expect("upload");
    }
    let mut names: Vec<String> = own
        .list("ci")
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.name)
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ci/project/7/k/1".to_owned(),
            format!("ci/runner/{TOKEN}/project/7/k/1"),
        ]
    );
}

#[tokio::test]
async fn errors_name_the_url_without_its_signature() {
    let moto = moto();
    let mut cfg = moto.cache_config(BUCKET);
    if let Some(s3) = cfg.s3.as_mut() {
        s3.bucket_name = Some("no-such-bucket".to_owned());
    }
    let cache = s3_cache(&cfg);
    let urls = urls(&cache, 1, "k").await;
    assert!(
        urls.put.contains("X-Amz-Signature="),
        "presigned: {}",
        urls.put
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("cache.zip");
    write_file(&archive, b"x");
    let err = upload(&client(), &urls.put, &archive, "k", 0)
        .await
        .expect_err("no bucket");
    let text = err.to_string();
    assert!(matches!(err, Error::Status { status: 404, .. }), "{text}");
    assert!(text.contains("NoSuchBucket"), "{text}");
    assert!(text.contains("/no-such-bucket/runner/"), "{text}");
    for secret in [
        "X-Amz-Signature",
        "X-Amz-Credential",
        "runwright-test-access",
        "?",
    ] {
        assert!(!text.contains(secret), "{secret:?} leaked into {text}");
    }

    // A connection failure, too.
    let port = moto
        .address()
        .rsplit_once(':')
        .map(|(_, p)| p.to_owned())
        .unwrap_or_default();
    drop(moto);
    let err = download(&client(), &urls.get, &urls.head, &archive)
        .await
        .expect_err("server gone");
    let text = format!("{err} / {err:?}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(!text.contains("X-Amz-Signature"), "{text}");
}

/// Real S3 refuses a presigned `PUT` sent with `Transfer-Encoding: chunked`, which moto accepts;
/// so the request itself is checked on a plain socket.
#[tokio::test]
async fn upload_sends_a_sized_plain_put() {
    use std::io::{BufRead, BufReader, Read, Write};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut reader = BufReader::new(stream);
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("read line");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push(line.trim_end().to_owned());
        }
        let length: usize = head
            .iter()
            .find_map(|h| {
                h.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(str::to_owned)
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("body");
        let mut stream = reader.into_inner();
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .expect("answer");
        (head, body)
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("cache.zip");
    let bytes = content(70_000);
    write_file(&archive, &bytes);
    let url = format!("http://127.0.0.1:{port}/bucket/project/1/k?X-Amz-Signature=s");
    let result = upload(&client(), &url, &archive, "build/main", 0)
        .await
        .expect("upload");
    assert_eq!(result, UploadResult::Uploaded { size: 70_000 });
    let (head, body) = server.join().expect("server thread");
    let lower: Vec<String> = head.iter().map(|h| h.to_ascii_lowercase()).collect();
    assert_eq!(
        lower[0],
        "put /bucket/project/1/k?x-amz-signature=s http/1.1"
    );
    for expected in [
        "content-type: application/octet-stream",
        "content-length: 70000",
        "x-amz-meta-cachekey: build/main",
    ] {
        assert!(
            lower.iter().any(|h| h == expected),
            "{expected:?} missing in {head:#?}"
        );
    }
    assert!(
        lower.iter().any(|h| h.starts_with("last-modified: ")),
        "{head:#?}"
    );
    assert!(
        !lower.iter().any(|h| h.starts_with("transfer-encoding")),
        "{head:#?}"
    );
    assert_eq!(body, bytes);
}

/// The region a presigned URL is signed for (`X-Amz-Credential=<key>/<date>/<region>/s3/aws4_request`).
fn signed_region(url: &str) -> String {
    let url = url::Url::parse(url).expect("url");
    let credential = url
        .query_pairs()
        .find(|(k, _)| k == "X-Amz-Credential")
        .map(|(_, v)| v.into_owned())
        .expect("credential");
    credential.split('/').nth(2).expect("region").to_owned()
}

#[tokio::test]
async fn without_bucket_location_the_region_is_asked_of_the_bucket() {
    // runner cache/s3v2/s3.go `detectBucketLocation`: GetBucketLocation, `EU` read as eu-west-1, an empty
    // answer or a failure as us-east-1.
    let moto = MotoServer::start();
    moto.create_bucket_in("cache-in-frankfurt", "eu-central-1");
    moto.create_bucket("cache-in-virginia");
    for (bucket, region) in [
        ("cache-in-frankfurt", "eu-central-1"),
        ("cache-in-virginia", "us-east-1"),
        ("no-such-bucket", "us-east-1"),
    ] {
        let cfg = moto.cache_config(bucket);
        assert_eq!(
            cfg.s3.as_ref().and_then(|s| s.bucket_location.clone()),
            None
        );
        let cache = s3_cache(&cfg);
        let object = cache.object_name(1, "k", false).expect("name");
        let url = cache.presign_get(&object, VALIDITY).await.expect("presign");
        assert_eq!(signed_region(url.as_str()), region, "{bucket}");
    }
    // A configured BucketLocation is used as is.
    let mut cfg = moto.cache_config("cache-in-frankfurt");
    if let Some(s3) = cfg.s3.as_mut() {
        s3.bucket_location = Some("ap-south-1".to_owned());
    }
    let cache = s3_cache(&cfg);
    let url = cache
        .presign_get("project/1/k", VALIDITY)
        .await
        .expect("presign");
    assert_eq!(signed_region(url.as_str()), "ap-south-1");
}

#[tokio::test]
async fn an_s3_compatible_server_is_addressed_path_style_when_path_style_is_unset() {
    let moto = moto();
    let mut cfg = moto.cache_config(BUCKET);
    if let Some(s3) = cfg.s3.as_mut() {
        s3.path_style = None;
    }
    let cache = s3_cache(&cfg);
    let url = cache
        .presign_put("project/3/key", VALIDITY, "key")
        .await
        .expect("presign");
    assert_eq!(url.host_str(), Some("127.0.0.1"));
    assert_eq!(url.path(), format!("/{BUCKET}/project/3/key"));
    // And the object really lands there.
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("cache.zip");
    write_file(&archive, &content(10));
    upload(&client(), url.as_str(), &archive, "key", 0)
        .await
        .expect("upload");
    let head = cache
        .presign_head("project/3/key", VALIDITY)
        .await
        .expect("presign");
    assert_eq!(head.path(), format!("/{BUCKET}/project/3/key"));
    let status = client().head(head).send().await.expect("HEAD").status();
    assert_eq!(status, 200);
}

/// The helper's form (`cache-archiver --header`, `cache-extractor` without `--head-url`): headers as given, a
/// `GET` straight away whose `Last-Modified` decides whether the local copy is current, a missing object
/// answered `NotFound`.
#[tokio::test]
async fn the_helpers_headers_and_a_get_without_head() {
    let moto = moto();
    let cache = s3_cache(&moto.cache_config(BUCKET));
    let u = urls(&cache, 3, "helper-key").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("up/cache.zip");
    let bytes = content(70_000);
    write_file(&archive, &bytes);
    let sent = runwright_cache::upload_with_headers(
        &client(),
        &u.put,
        &archive,
        &[("X-Amz-Meta-Cachekey".into(), " helper-key ".into())],
    )
    .await
    .expect("upload");
    assert_eq!(sent, bytes.len() as u64);

    let restored = dir.path().join("down/cache.zip");
    let down = runwright_cache::download_from(&client(), &u.get, None, &restored)
        .await
        .expect("download");
    let DownloadResult::Downloaded { metadata, .. } = down else {
        panic!("expected a download, got {down:?}");
    };
    assert_eq!(std::fs::read(&restored).expect("restored"), bytes);
    assert_eq!(
        metadata.get("cachekey").map(String::as_str),
        Some("helper-key")
    );
    let again = runwright_cache::download_from(&client(), &u.get, None, &restored)
        .await
        .expect("download");
    assert!(
        matches!(again, DownloadResult::UpToDate { .. }),
        "{again:?}"
    );

    let missing = urls(&cache, 3, "nothing-here").await;
    let none = runwright_cache::download_from(
        &client(),
        &missing.get,
        None,
        &dir.path().join("x/cache.zip"),
    )
    .await
    .expect("download");
    assert_eq!(none, DownloadResult::NotFound);

    // A header that is no header is refused by name, before anything is sent.
    let err = runwright_cache::upload_with_headers(
        &client(),
        &u.put,
        &archive,
        &[("bad name".into(), "v".into())],
    )
    .await
    .expect_err("bad header");
    assert!(err.to_string().contains("\"bad name\""), "{err}");
}
