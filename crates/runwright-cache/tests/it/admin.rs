//! `cache list` / `cache clear` over local directories and S3 prefixes.

use std::path::Path;
use std::time::{Duration, SystemTime};

use runwright_cache::admin::{clear, list};
use runwright_cache::s3::http_client;
use runwright_cache::{hashed, upload, CacheEntry, Filter, LocalCache, Location, RunnerCaches};

use crate::support::*;

fn local_runner(name: &str, dir: &Path) -> RunnerCaches {
    RunnerCaches {
        name: name.to_owned(),
        local: Some(LocalCache::new(dir)),
        s3: None,
    }
}

/// A local archive with its metadata, last written `age` ago.
fn put_local(
    cache: &LocalCache,
    slug: &str,
    storage_key: &str,
    human: Option<&str>,
    age: Duration,
) {
    let archive = cache.archive_path(slug, storage_key);
    write_file(&archive, &content(10 + storage_key.len()));
    if let Some(human) = human {
        cache
            .write_metadata(slug, storage_key, human)
            .expect("metadata");
        // Written together with the archive: last used `age` ago (a restore would touch metadata.json).
        set_mtime(
            &cache.metadata_path(slug, storage_key),
            SystemTime::now() - age,
        );
    }
    set_mtime(&archive, SystemTime::now() - age);
}

fn keys(entries: &[CacheEntry]) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = entries
        .iter()
        .map(|e| (e.project.clone(), e.key.clone()))
        .collect();
    keys.sort();
    keys
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = items
        .iter()
        .map(|(p, k)| ((*p).to_owned(), (*k).to_owned()))
        .collect();
    v.sort();
    v
}

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

#[tokio::test]
async fn local_list_then_clear_with_filters_and_dry_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = LocalCache::new(dir.path());
    put_local(
        &cache,
        "group/app",
        "build/main-1",
        Some("build/main-1"),
        HOUR,
    );
    // A key and a longer key below it.
    put_local(&cache, "group/app", "a", Some("a"), 3 * DAY);
    put_local(&cache, "group/app", "a/b", Some("a/b"), HOUR);
    // Hashed keys: one directory named by the hash, the human key in metadata.json.
    put_local(
        &cache,
        "group/lib",
        &hashed("deps key"),
        Some("deps key"),
        3 * DAY,
    );
    // No metadata.json (older runners): the key is the last directory.
    put_local(&cache, "project-9", "default-2", None, 10 * DAY);
    // Not archives: ignored.
    write_file(&dir.path().join("group/app/stray/notes.txt"), b"x");

    let runners = [local_runner("shell-1", dir.path())];
    let entries = list(&runners).await.expect("list");
    assert_eq!(
        keys(&entries),
        pairs(&[
            ("group/app", "build/main-1"),
            ("group/app", "a"),
            ("group/app", "a/b"),
            ("group/lib", "deps key"),
            ("project-9", "default-2"),
        ])
    );
    let first = entries
        .iter()
        .find(|e| e.key == "build/main-1")
        .expect("entry");
    assert_eq!(first.runner, "shell-1");
    assert_eq!(first.size, 10 + "build/main-1".len() as u64);
    assert_eq!(
        first.location,
        Location::Local {
            path: dir.path().join("group/app/build/main-1/cache.zip")
        }
    );

    // Dry run: reported, nothing removed.
    let old = Filter {
        older_than: Some(2 * DAY),
        ..Filter::default()
    };
    let would = clear(&entries, &old, true).await.expect("dry run");
    assert_eq!(
        keys(&would),
        pairs(&[
            ("group/app", "a"),
            ("group/lib", "deps key"),
            ("project-9", "default-2")
        ])
    );
    assert_eq!(list(&runners).await.expect("list").len(), 5);

    // For real.
    let deleted = clear(&entries, &old, false).await.expect("clear");
    assert_eq!(keys(&deleted), keys(&would));
    let left = list(&runners).await.expect("list");
    assert_eq!(
        keys(&left),
        pairs(&[("group/app", "build/main-1"), ("group/app", "a/b")])
    );
    // `a/b` survives the removal of `a`; emptied directories are gone up to cache_dir.
    assert!(dir.path().join("group/app/a/b/cache.zip").is_file());
    assert!(!dir.path().join("group/app/a/cache.zip").exists());
    assert!(!dir.path().join("group/app/a/metadata.json").exists());
    assert!(!dir.path().join("group/lib").exists());
    assert!(!dir.path().join("project-9").exists());
    assert!(dir.path().is_dir());

    // Project and key prefix together.
    let filter = Filter {
        project: Some("group/app".to_owned()),
        key_prefix: Some("build/".to_owned()),
        ..Filter::default()
    };
    let deleted = clear(&left, &filter, false).await.expect("clear");
    assert_eq!(keys(&deleted), pairs(&[("group/app", "build/main-1")]));
    assert!(!dir.path().join("group/app/build").exists());
    // The stray file keeps its directory.
    assert!(dir.path().join("group/app/stray/notes.txt").is_file());
}

#[tokio::test]
async fn a_missing_cache_dir_lists_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runners = [local_runner("r", &dir.path().join("never-created"))];
    assert!(list(&runners).await.expect("list").is_empty());
}

#[tokio::test]
async fn s3_list_then_clear_with_filters_and_dry_run() {
    let moto = moto();
    let mut cfg = moto.cache_config(BUCKET);
    cfg.path = Some("ci".to_owned());
    let own = s3_cache(&cfg);
    // Another runner's caches in the same bucket are not this runner's to list or clear.
    let other = match runwright_cache::S3Cache::new(&cfg, "othertok9") {
        Ok(Some(c)) => c,
        other => panic!("other runner's cache: {other:?}"),
    };
    let client = http_client(Duration::from_secs(60)).expect("client");
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("cache.zip");
    write_file(&archive, &content(123));
    for (cache, project, key) in [
        (&own, 1, "build/main"),
        (&own, 1, "deps-1-protected"),
        (&own, 2, "build/main"),
        (&other, 1, "build/main"),
    ] {
        let object = cache.object_name(project, key, false).expect("name");
        let url = cache
            .presign_put(&object, VALIDITY, key)
            .await
            .expect("presign");
        upload(&client, url.as_str(), &archive, key, 0)
            .await
            .expect("upload");
    }

    let runners = [RunnerCaches {
        name: "docker-1".to_owned(),
        local: None,
        s3: Some(own.clone()),
    }];
    let entries = list(&runners).await.expect("list");
    assert_eq!(
        keys(&entries),
        pairs(&[
            ("1", "build/main"),
            ("1", "deps-1-protected"),
            ("2", "build/main")
        ])
    );
    let e = &entries[0];
    assert_eq!(e.runner, "docker-1");
    assert_eq!(e.size, 123);
    assert_eq!(
        e.location,
        Location::S3 {
            bucket: BUCKET.to_owned(),
            object: format!("ci/runner/{TOKEN}/project/1/build/main"),
        }
    );
    let age = SystemTime::now()
        .duration_since(e.last_used)
        .unwrap_or_default();
    assert!(age < HOUR, "last_used is S3's LastModified: {age:?}");
    let json = serde_json::to_value(e).expect("json");
    assert_eq!(json["location"]["type"], "s3");

    // Nothing is old enough, so nothing goes.
    let old = Filter {
        older_than: Some(DAY),
        ..Filter::default()
    };
    assert!(clear(&entries, &old, false)
        .await
        .expect("clear")
        .is_empty());

    let filter = Filter {
        project: Some("1".to_owned()),
        ..Filter::default()
    };
    let would = clear(&entries, &filter, true).await.expect("dry run");
    assert_eq!(
        keys(&would),
        pairs(&[("1", "build/main"), ("1", "deps-1-protected")])
    );
    assert_eq!(
        list(&runners).await.expect("list").len(),
        3,
        "dry run deletes nothing"
    );

    let deleted = clear(&entries, &filter, false).await.expect("clear");
    assert_eq!(keys(&deleted), keys(&would));
    let left = list(&runners).await.expect("list");
    assert_eq!(keys(&left), pairs(&[("2", "build/main")]));
    // Really gone from the bucket, and the other runner's object is untouched.
    let mut all: Vec<String> = own
        .list("ci")
        .await
        .expect("list bucket")
        .into_iter()
        .map(|o| o.name)
        .collect();
    all.sort();
    assert_eq!(
        all,
        [
            "ci/runner/othertok9/project/1/build/main".to_owned(),
            format!("ci/runner/{TOKEN}/project/2/build/main"),
        ]
    );
    let (status, _) = moto
        .request(
            "HEAD",
            &format!("/{BUCKET}/ci/runner/{TOKEN}/project/1/build/main"),
        )
        .expect("head");
    assert_eq!(status, 404);
}

#[tokio::test]
async fn sharded_hashed_keys_are_listed_by_their_hash() {
    // FF_HASH_CACHE_KEYS in GitLab Runner 19.x: `project/<id>/<hash[0:2]>/<hash>`.
    let moto = moto();
    let cache = s3_cache(&moto.cache_config(BUCKET));
    let hash = hashed("build/main");
    let object = cache.object_name(4, &hash, true).expect("name");
    assert_eq!(
        object,
        format!("runner/{TOKEN}/project/4/{}/{hash}", &hash[..2])
    );
    let client = http_client(Duration::from_secs(60)).expect("client");
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("cache.zip");
    write_file(&archive, &content(5));
    let url = cache
        .presign_put(&object, VALIDITY, "build/main")
        .await
        .expect("presign");
    upload(&client, url.as_str(), &archive, "build/main", 0)
        .await
        .expect("upload");
    let runners = [RunnerCaches {
        name: "r".to_owned(),
        local: None,
        s3: Some(cache.clone()),
    }];
    let entries = list(&runners).await.expect("list");
    assert_eq!(keys(&entries), pairs(&[("4", hash.as_str())]));
}
