//! Issue 17 item 8: what GitLab sends (job names, refs, project paths, a job's output) and what config.toml holds
//! (runner names) reaches the operator's terminal through `history`, `logs`, `list` and `status` as text, never
//! as escape sequences: a job author cannot set the terminal's title, clear it, write its clipboard or move its
//! cursor. The attacker is a job author: the job's name, ref and project path carry an OSC title sequence and a
//! screen clear, and its script prints them too.

use crate::harness::*;
use runwright_coordinator::{JobSpec, ProjectSpec, RunnerOptions};
use std::process::{Command, Output};

/// Sets the terminal's title.
const TITLE: &str = "\x1b]0;pwned-title\x07";
/// Clears the screen.
const CLEAR: &str = "\x1b[2J";

fn run(h: &Harness, args: &[&str]) -> Output {
    h.command().args(args).output().expect("runwright runs")
}

/// Nothing in `text` a terminal would act on: no ESC, BEL, C1 control.
fn assert_inert(what: &str, text: &str) {
    let bad: Vec<char> = text
        .chars()
        .filter(|c| c.is_control() && !matches!(c, '\n' | '\t'))
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: controls {bad:?} reach the terminal:\n{text:?}"
    );
}

/// `runwright args…` with its stdout on a terminal (util-linux `script` gives it a pty); what the terminal got.
fn on_a_terminal(h: &Harness, args: &[&str]) -> Option<String> {
    if !["/usr/bin/script", "/bin/script"]
        .iter()
        .any(|p| std::path::Path::new(p).exists())
    {
        eprintln!("skipped the terminal case: no `script` (util-linux)");
        return None;
    }
    let base = h.command();
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let mut line = quote(&base.get_program().to_string_lossy());
    for a in args {
        line.push(' ');
        line.push_str(&quote(a));
    }
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &line, "/dev/null"]);
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().expect("script runs");
    assert!(
        out.status.success(),
        "{args:?} on a terminal: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn escape_sequences_from_gitlab_and_the_config_are_shown_not_obeyed() {
    let mut h = Harness::new().await;
    h.coordinator.add_runner(TOKEN, RunnerOptions::default());
    // The runner's name in config.toml, with the same sequences written as TOML escapes.
    let runner_name = format!("runner{TITLE}{CLEAR}");
    let toml_name = "runner\\u001b]0;pwned-title\\u0007\\u001b[2J";
    h.write_config(&format!(
        "concurrent = 1\ncheck_interval = 1\n{}",
        h.runner_toml(toml_name, TOKEN, "")
    ));
    h.start();
    let job_name = format!("build{TITLE}{CLEAR}");
    let spec = JobSpec {
        git_ref: format!("main{TITLE}"),
        project: ProjectSpec::new(7, &format!("grp/app{CLEAR}")),
        ..JobSpec::shell(
            &job_name,
            &["printf 'out\\033]0;trace-title\\007\\033]52;c;cHduZWQ=\\007\\033[2J\\033[31mred\\033[0m-end\\n'"],
        )
    };
    let id = h.coordinator.enqueue(spec);
    let job = h.final_job(id).await;
    assert_eq!(job.state, "success", "{}\n{}", job.trace_text(), h.log());
    let config = h.config_path.to_string_lossy().into_owned();
    let escaped = |s: &str| s.replace('\x1b', "\\u{1b}").replace('\x07', "\\u{7}");

    // history: the table shows the sequences as text.
    let out = run(&h, &["history", "-c", &config]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_inert("history", &table);
    for shown in [
        &job_name,
        &runner_name,
        &format!("main{TITLE}"),
        &format!("grp/app{CLEAR}"),
    ] {
        assert!(
            table.contains(&escaped(shown)),
            "{:?} not shown in:\n{table}",
            escaped(shown)
        );
    }
    // history --json: the same values, escaped the JSON way.
    let out = run(&h, &["history", "-c", &config, "--json"]);
    let json = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_inert("history --json", &json);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v[0]["job_name"], job_name.as_str());

    // logs, not on a terminal: plain text.
    let out = run(&h, &["logs", &id.to_string(), "-c", &config]);
    let plain = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_inert("logs", &plain);
    assert!(plain.contains("\noutred-end\n"), "{plain}");
    // logs on a terminal: the colours, nothing else.
    if let Some(tty) = on_a_terminal(&h, &["logs", &id.to_string(), "-c", &config]) {
        assert!(tty.contains("out\x1b[31mred\x1b[0m-end"), "{tty:?}");
        for seq in ["\x1b]", "\x1b[2J", "\x07"] {
            assert!(!tty.contains(seq), "{seq:?} reached the terminal: {tty:?}");
        }
    }

    // list and status: the runner's name as text.
    let out = run(&h, &["list", "-c", &config]);
    let listed = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{listed}");
    assert_inert("list", &listed);
    assert!(listed.contains(&escaped(&runner_name)), "{listed}");
    let out = run(&h, &["status", "-c", &config, "--offline"]);
    let status = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_inert("status", &status);
    assert!(status.contains(&escaped(&runner_name)), "{status}");
    let out = run(&h, &["status", "-c", &config, "--offline", "--json"]);
    assert_inert("status --json", &String::from_utf8_lossy(&out.stdout));
}
