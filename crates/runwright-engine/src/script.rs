//! Generated stage scripts for bash and POSIX sh, shaped as GitLab's runner writes them (runner shells/bash.go,
//! shells/abstract.go): every stage is a self-contained script that exports the job's variables, changes into the
//! project directory and runs its commands with `errexit`, so the first failing command ends the stage.

use crate::variables::Variables;
use runwright_trace::ansi;

/// Quotes a string for bash and POSIX sh: plain when every byte is safe, otherwise single quotes (with `'\''`
/// for a quote). GitLab's bash writer uses ANSI-C `$'…'` quoting, which dash (Debian's sh) does not understand;
/// single quotes carry every byte but NUL (which no variable can hold) in both shells.
pub fn shell_escape(input: &str) -> String {
    if !input.is_empty()
        && input
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_/.:=,+-@%".contains(&b))
    {
        return input.to_string();
    }
    single_quote(input)
}

/// Quotes with POSIX single quotes; used where `$'…'` is not guaranteed (the outer `eval` of sh scripts).
pub fn single_quote(input: &str) -> String {
    format!("'{}'", input.replace('\'', "'\\''"))
}

/// Accumulates the body of one stage script.
#[derive(Debug, Default, Clone)]
pub struct ScriptWriter {
    body: String,
    indent: usize,
}

impl ScriptWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    /// The commands written so far, without the wrapping [`ScriptWriter::finish`] adds.
    pub fn body(&self) -> &str {
        &self.body
    }

    pub fn line(&mut self, text: &str) {
        for _ in 0..self.indent {
            self.body.push_str("  ");
        }
        self.body.push_str(text);
        self.body.push('\n');
    }

    pub fn command(&mut self, argv: &[&str]) {
        let line = argv
            .iter()
            .map(|a| shell_escape(a))
            .collect::<Vec<_>>()
            .join(" ");
        self.line(&line);
    }

    fn echo_colored(&mut self, color: &str, text: &str) {
        self.line(&format!(
            "echo {}",
            shell_escape(&format!("{color}{text}{}", ansi::RESET))
        ));
    }

    /// A bold green notice, like the runner's `$ command` lines.
    pub fn notice(&mut self, text: &str) {
        self.echo_colored(ansi::BOLD_GREEN, text);
    }

    pub fn warning(&mut self, text: &str) {
        self.echo_colored(ansi::YELLOW, text);
    }

    /// A plain line (runner shells/bash.go `Printf`: the colour reset first).
    pub fn printf(&mut self, text: &str) {
        self.line(&format!(
            "echo {}",
            shell_escape(&format!("{}{text}", ansi::RESET))
        ));
    }

    /// `if <command> >/dev/null 2>&1 ; then` (runner shells/bash.go `IfCmd`). `env` goes before the command as
    /// assignments, so values reach it through its environment rather than its argv.
    pub fn if_cmd(&mut self, env: &[(&str, &str)], argv: &[&str]) {
        self.line(&format!(
            "if {} >/dev/null 2>&1 ; then",
            command_line(env, argv)
        ));
        self.indent += 1;
    }

    /// `if <command> ; then`, its output in the log (runner shells/bash.go `IfCmdWithOutput`); `env` as for
    /// [`ScriptWriter::if_cmd`].
    pub fn if_cmd_with_output(&mut self, env: &[(&str, &str)], argv: &[&str]) {
        self.line(&format!("if {} ; then", command_line(env, argv)));
        self.indent += 1;
    }

    /// A command whose failure ends the stage (runner shells/bash.go `Command`), with `env` as assignments before
    /// it (in its environment, not its argv).
    pub fn command_with_env(&mut self, env: &[(&str, &str)], argv: &[&str]) {
        self.line(&command_line(env, argv));
    }

    pub fn if_directory(&mut self, path: &str) {
        self.line(&format!("if [ -d {} ]; then", shell_escape(path)));
        self.indent += 1;
    }

    pub fn if_file(&mut self, path: &str) {
        self.line(&format!("if [ -e {} ]; then", shell_escape(path)));
        self.indent += 1;
    }

    pub fn else_(&mut self) {
        self.indent = self.indent.saturating_sub(1);
        self.line("else");
        self.indent += 1;
    }

    pub fn end_if(&mut self) {
        self.indent = self.indent.saturating_sub(1);
        self.line("fi");
    }

    pub fn cd(&mut self, path: &str) {
        self.command(&["cd", path]);
    }

    /// `mkdir -p` only when the directory is missing: every stage starts with this, and a test is a builtin.
    pub fn ensure_dir(&mut self, path: &str) {
        let p = shell_escape(path);
        self.line(&format!("[ -d {p} ] || mkdir -p {p}"));
    }

    pub fn mkdir(&mut self, path: &str) {
        self.command(&["mkdir", "-p", path]);
    }

    pub fn rm_dir(&mut self, path: &str) {
        self.command(&["rm", "-r", "-f", path]);
    }

    pub fn rm_file(&mut self, path: &str) {
        self.command(&["rm", "-f", path]);
    }

    /// Exports every variable (file variables become files in `tmp_dir`), then sources `GITLAB_ENV` so earlier
    /// stages can pass variables on (runner shells/abstract.go `writeExports`, bash.go `Variable`, `SourceEnv`).
    pub fn exports(&mut self, vars: &Variables, tmp_dir: &str) {
        let mut made_tmp = false;
        for v in vars.deduplicated() {
            if !is_valid_env_name(&v.key) {
                continue;
            }
            if v.file {
                if !made_tmp {
                    self.ensure_dir(tmp_dir);
                    made_tmp = true;
                }
                let path = format!("{tmp_dir}/{}", v.key);
                self.line(&format!(
                    "printf '%s' {} > {}",
                    shell_escape(&v.value),
                    shell_escape(&path)
                ));
                self.line(&format!("export {}={}", v.key, shell_escape(&path)));
            } else {
                self.line(&format!("export {}={}", v.key, shell_escape(&v.value)));
            }
        }
        let env_file = format!("{tmp_dir}/gitlab_runner_env");
        if !made_tmp {
            self.ensure_dir(tmp_dir);
        }
        self.line(&format!("export GITLAB_ENV={}", shell_escape(&env_file)));
        // `: >>` creates the file without starting `touch`.
        self.line(&format!(": >> {}", shell_escape(&env_file)));
        self.line(&format!(
            "while read -r line; do export \"$line\"; done < {}",
            shell_escape(&env_file)
        ));
    }

    /// The job's environment without writing anything (runner shells/abstract.go `writeEnvExports`, for the
    /// cleanup stage): file variables get their path only, `GITLAB_ENV` is read when it is there.
    pub fn env_exports(&mut self, vars: &Variables, tmp_dir: &str) {
        for v in vars.deduplicated() {
            if !is_valid_env_name(&v.key) {
                continue;
            }
            let value = if v.file {
                format!("{tmp_dir}/{}", v.key)
            } else {
                v.value.clone()
            };
            self.line(&format!("export {}={}", v.key, shell_escape(&value)));
        }
        let env_file = shell_escape(&format!("{tmp_dir}/gitlab_runner_env"));
        self.line(&format!("export GITLAB_ENV={env_file}"));
        self.line(&format!(
            "if [ -f {env_file} ]; then while read -r line; do export \"$line\"; done < {env_file}; fi"
        ));
    }

    /// User commands: each echoed as a green `$ command` line, then run (runner shells/abstract.go `writeCommands`).
    pub fn user_commands(&mut self, commands: &[String]) {
        for command in commands {
            let trimmed = command.trim();
            if trimmed.is_empty() {
                self.line("echo");
            } else {
                let mut lines = trimmed.splitn(2, '\n');
                let first = lines.next().unwrap_or_default();
                if lines.next().is_some() {
                    self.notice(&format!("$ {first} # collapsed multi-line command"));
                } else {
                    self.notice(&format!("$ {first}"));
                }
            }
            self.line(trimmed);
        }
    }

    /// A shell snippet from config.toml (`pre_build_script`, …), run like a user command; empty ones are skipped.
    pub fn config_snippet(&mut self, snippet: Option<&str>) {
        if let Some(s) = snippet.filter(|s| !s.trim().is_empty()) {
            self.user_commands(&[s.to_string()]);
        }
    }

    /// The complete script: the body runs under `eval` in a subshell with `errexit` and `pipefail`, stdin empty
    /// (runner shells/bash.go `Finish`). `trace` turns on `xtrace` (`CI_DEBUG_TRACE`).
    pub fn finish(&self, shell: &str, trace: bool) -> String {
        self.finish_with_eval(shell, trace, false)
    }

    /// [`ScriptWriter::finish`], with the body in gitlab-runner's legacy `: | eval '…'` pipeline when
    /// `legacy_eval` (`FF_USE_LEGACY_BASH_EVAL`).
    pub fn finish_with_eval(&self, shell: &str, trace: bool, legacy_eval: bool) -> String {
        let mut s = String::with_capacity(self.body.len() * 2 + 200);
        s.push_str(&format!("#!/usr/bin/env {shell}\n\n"));
        // `trap 'exit 1' TERM` (runner `bashExitOnScriptTerminationSignal`): quoted, or bash reads `exit` as the
        // action and `1` as SIGHUP.
        s.push_str("trap 'exit 1' TERM\n\n");
        if trace {
            s.push_str("set -o xtrace\n");
        }
        // GitLab probes with `set -o | grep pipefail`; a subshell probe does the same without starting grep.
        s.push_str("if (set -o pipefail) 2>/dev/null; then set -o pipefail; fi; set -o errexit\n");
        s.push_str("set +o noclobber\n");
        // gitlab-runner 19.4's default (shells/bash.go `Finish`, FF_USE_LEGACY_BASH_EVAL off): the body in a
        // subshell that re-installs the TERM trap, stdin closed. Unlike the legacy `: | eval …` pipeline it keeps a
        // failing command's exit code (127 for a missing command, where the pipeline form gave 1).
        if legacy_eval {
            s.push_str(&format!(": | eval {}\n", single_quote(&self.body)));
        } else {
            s.push_str(&format!(
                "(trap 'exit 1' TERM; eval {}) < /dev/null\n",
                single_quote(&self.body)
            ));
        }
        s.push_str("exit 0\n");
        s
    }
}

/// `K=v … cmd arg…`, every word quoted; assignments whose name is not a shell variable name are left out.
fn command_line(env: &[(&str, &str)], argv: &[&str]) -> String {
    env.iter()
        .filter(|(k, _)| is_valid_env_name(k))
        .map(|(k, v)| format!("{k}={}", shell_escape(v)))
        .chain(argv.iter().map(|a| shell_escape(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Shell variable names: exporting anything else would be a syntax error that fails every stage.
pub fn is_valid_env_name(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn run(shell: &str, script: &str) -> (i32, String) {
        use std::io::Write;
        let mut child = Command::new(shell)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("shell runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("wait");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    #[test]
    fn escape_round_trips_through_bash_and_sh() {
        for s in [
            "plain",
            "with space",
            "quote ' and \" and \\ and $HOME and `x`",
            "new\nline\ttab",
            "ünïcødé \u{1b}[31m",
            "",
        ] {
            let script = format!("printf '%s' {}", shell_escape(s));
            for shell in ["bash", "sh"] {
                let (code, out) = run(shell, &script);
                assert_eq!(code, 0, "{shell}");
                assert_eq!(out, s, "{shell}");
            }
        }
    }

    #[test]
    fn env_only_exports_never_write_a_file_variable_again() {
        let dir = std::env::temp_dir().join(format!("rw-env-exports-{}", std::process::id()));
        let tmp = dir.to_string_lossy().to_string();
        let mut vars = Variables::new();
        vars.set("PLAIN", "a b");
        vars.push(runwright_api::types::JobVariable {
            key: "SECRET_FILE".into(),
            value: "s3cr3t".into(),
            file: true,
            ..Default::default()
        });
        let mut w = ScriptWriter::new();
        w.env_exports(&vars, &tmp);
        w.line("echo \"$PLAIN|$SECRET_FILE|$GITLAB_ENV\"");
        assert!(!w.body().contains("s3cr3t"), "{}", w.body());
        for shell in ["bash", "sh"] {
            let (code, out) = run(shell, &w.finish(shell, false));
            assert_eq!(code, 0, "{shell}");
            assert_eq!(
                out,
                format!("a b|{tmp}/SECRET_FILE|{tmp}/gitlab_runner_env\n"),
                "{shell}"
            );
            // Nothing made: not the temporary dir, not the env file.
            assert!(!dir.exists(), "{shell}");
        }
    }

    #[test]
    fn helper_calls_get_their_environment_as_assignments_not_arguments() {
        let mut w = ScriptWriter::new();
        w.if_cmd_with_output(
            &[("CI_JOB_TOKEN", "tok en"), ("not valid", "x")],
            &[
                "sh",
                "-c",
                "printf '%s|%s' \"$CI_JOB_TOKEN\" \"$#\"",
                "zero",
            ],
        );
        w.line("echo");
        w.else_();
        w.line("echo failed");
        w.end_if();
        assert!(!w.body().contains("not valid"), "{}", w.body());
        for shell in ["bash", "sh"] {
            let (code, out) = run(shell, &w.finish(shell, false));
            assert_eq!((code, out.as_str()), (0, "tok en|0\n"), "{shell}");
        }
    }

    #[test]
    fn a_failing_command_keeps_its_exit_code_as_in_gitlab_runner_19() {
        // runner shells/bash.go: the subshell form keeps 127 for a missing command (the legacy pipeline gave 1).
        let mut w = ScriptWriter::new();
        w.user_commands(&["no-such-command-here ci".into()]);
        for shell in ["bash", "sh"] {
            let (code, _) = run(shell, &w.finish(shell, false));
            assert_eq!(code, 127, "{shell}");
        }
        let mut w = ScriptWriter::new();
        w.user_commands(&["(exit 42)".into(), "echo never".into()]);
        assert_eq!(run("bash", &w.finish("bash", false)).0, 42);
        // FF_USE_LEGACY_BASH_EVAL: the old pipeline form, which loses the 127.
        let mut w = ScriptWriter::new();
        w.user_commands(&["no-such-command-here ci".into()]);
        assert_eq!(run("bash", &w.finish_with_eval("bash", false, true)).0, 1);
    }

    #[test]
    fn stops_at_first_failure_and_echoes_commands() {
        let mut w = ScriptWriter::new();
        w.user_commands(&["echo one".into(), "false".into(), "echo never".into()]);
        for shell in ["bash", "sh"] {
            let (code, out) = run(shell, &w.finish(shell, false));
            assert_eq!(code, 1, "{shell}");
            assert!(out.contains("$ echo one"), "{out}");
            assert!(out.contains("one\n"));
            assert!(!out.contains("never\n"), "{shell}: {out}");
        }
    }

    #[test]
    fn exports_file_variables_and_gitlab_env() {
        let dir = std::env::temp_dir().join(format!("rw-script-{}", std::process::id()));
        let tmp = dir.to_string_lossy().to_string();
        let mut vars = Variables::new();
        vars.set("PLAIN", "a b'c");
        vars.push(runwright_api::types::JobVariable {
            key: "FILEVAR".into(),
            value: "line1\nline2".into(),
            file: true,
            ..Default::default()
        });
        vars.set("bad-name", "skipped");
        let mut w = ScriptWriter::new();
        w.exports(&vars, &tmp);
        w.line("echo \"$PLAIN\"; cat \"$FILEVAR\"; echo; echo NEXT=1 >> \"$GITLAB_ENV\"");
        let (code, out) = run("bash", &w.finish("bash", false));
        assert_eq!(code, 0, "{out}");
        assert_eq!(out, "a b'c\nline1\nline2\n");
        let mut w2 = ScriptWriter::new();
        w2.exports(&vars, &tmp);
        w2.line("echo \"next=$NEXT\"");
        let (_, out2) = run("sh", &w2.finish("sh", false));
        assert_eq!(out2, "next=1\n");
        let _ = std::fs::remove_dir_all(dir);
    }
}
