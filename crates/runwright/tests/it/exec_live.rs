//! `runwright exec` on a terminal: the live view (one row per job with its status and duration, the failed
//! job's tail), under a real pseudo-terminal from util-linux's `script`.

use crate::harness::*;
use std::process::Command;

const PIPELINE: &str = r#"
stages: [build, test]
good:
  stage: build
  script:
    - for i in 1 2 3; do echo "good-output $i"; sleep 0.2; done
broken:
  stage: test
  script:
    - for i in $(seq -w 1 30); do echo "boom $i"; done
    - exit 1
"#;

/// Runs `runwright exec ARGS` in `dir` under a pseudo-terminal; what the terminal received.
fn on_a_terminal(h: &Harness, dir: &std::path::Path, args: &str, env: &[(&str, &str)]) -> String {
    let base = h.command();
    let mut cmd = Command::new("script");
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.envs(env.iter().copied());
    let line = format!("{} exec {args}", env!("CARGO_BIN_EXE_runwright"));
    // -q: no "Script started" lines; -e: runwright's exit status; -c: the command; the typescript goes nowhere.
    let out = cmd
        .args(["-qec", &line, "/dev/null"])
        .current_dir(dir)
        .output()
        .expect("script (util-linux) runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "the pipeline fails:\n{text}");
    text
}

#[tokio::test]
async fn a_terminal_gets_the_live_view_with_the_failed_jobs_tail() {
    let h = Harness::new().await;
    h.make_repo("grp/live", &[(".gitlab-ci.yml", PIPELINE)]);
    let dir = h.path().join("src/grp/live");

    let text = on_a_terminal(&h, &dir, "--executor shell -j 1", &[("TERM", "xterm")]);
    // Rows, not the line mode's headers and logs.
    assert!(!text.contains("=== good ("), "{text}");
    assert!(
        !text.contains("boom 03"),
        "logs stay in the log files: {text}"
    );
    assert!(text.contains("\x1b[32m✔\x1b[0m good"), "{text}");
    assert!(text.contains("\x1b[31m✘\x1b[0m broken"), "{text}");
    assert!(text.contains("failed (exit code 1)"), "{text}");
    // The failed job's tail, above the rows, with where its whole log is.
    assert!(text.contains("--- broken failed"), "{text}");
    assert!(text.contains("  boom 30"), "{text}");
    assert!(text.contains("broken.log"), "{text}");
    // The summary table after the view.
    assert!(text.contains("pipeline failed"), "{text}");

    // NO_COLOR: the same view without colours.
    let plain = on_a_terminal(
        &h,
        &dir,
        "--executor shell -j 1",
        &[("TERM", "xterm"), ("NO_COLOR", "1")],
    );
    assert!(plain.contains("✘ broken"), "{plain}");
    assert!(
        !plain.contains("\x1b[31m") && !plain.contains("\x1b[32m"),
        "{plain}"
    );

    // --view lines on the terminal: the logs as before.
    let lines = on_a_terminal(
        &h,
        &dir,
        "--executor shell -j 1 --view lines",
        &[("TERM", "xterm")],
    );
    assert!(lines.contains("=== good (build)"), "{lines}");
    assert!(lines.contains("boom 03"), "{lines}");
}
