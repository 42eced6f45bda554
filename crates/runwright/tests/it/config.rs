//! A broken config stops start-up with the location of the error; the shared examples load.

use crate::harness::*;

#[tokio::test]
async fn broken_config_stops_startup_with_file_line_and_key() {
    let h = Harness::new().await;
    h.write_config("concurrent = 2\n[[runners]]\n  name = \"x\"\n  url = \"http://127.0.0.1:1/\"\n  token = \"t\"\n  executor = \"shell\"\n  limit = \"four\"\n");
    let out = h
        .command()
        .args(["run", "-c"])
        .arg(&h.config_path)
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("config.toml:7:"), "{err}");
    assert!(err.contains("limit"), "{err}");
}

#[tokio::test]
async fn list_prints_gitlab_lines_with_shortened_tokens() {
    let h = Harness::new().await;
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../runwright-config/tests/fixtures/build-host.toml");
    let out = h
        .command()
        .args(["list", "-c"])
        .arg(&examples)
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("wb31-projrunner-shellexec"), "{err}");
    assert!(
        err.contains("Executor=shell Token=AsX-3Txxx URL=https://git.gfz.de/"),
        "{err}"
    );
    assert!(
        !err.contains("AsX-3Txxxxxxxxxxxxxxxxxxxxxx"),
        "full token printed: {err}"
    );
}
