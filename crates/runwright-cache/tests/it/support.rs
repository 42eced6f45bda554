//! Shared helpers: a moto server with a bucket, files with known content and mtimes.

use std::path::Path;
use std::time::{Duration, SystemTime};

use runwright_cache::testing::MotoServer;
use runwright_cache::S3Cache;
use runwright_config::CacheConfig;

pub const BUCKET: &str = "runner-cache";
pub const TOKEN: &str = "shorttok1";
/// Long enough for any test, short enough to be a realistic job timeout.
pub const VALIDITY: Duration = Duration::from_secs(3600);

/// A moto server with [`BUCKET`] created.
pub fn moto() -> MotoServer {
    let server = MotoServer::start();
    server.create_bucket(BUCKET);
    server
}

/// The S3 cache of `cfg` for runner [`TOKEN`].
pub fn s3_cache(cfg: &CacheConfig) -> S3Cache {
    match S3Cache::new(cfg, TOKEN) {
        Ok(Some(cache)) => cache,
        Ok(None) => panic!("the config has no S3 cache"),
        Err(e) => panic!("S3 cache config refused: {e}"),
    }
}

/// Bytes that are not all alike, so a truncated or shifted copy shows.
pub fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

pub fn write_file(path: &Path, bytes: &[u8]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create parent");
    }
    std::fs::write(path, bytes).expect("write file");
}

pub fn set_mtime(path: &Path, time: SystemTime) {
    let file = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open for mtime");
    file.set_modified(time).expect("set mtime");
}

pub fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .expect("mtime")
}
