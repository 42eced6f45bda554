//! Keeps `env_vars.rs` the one place: no crate of the workspace reads an environment variable by a literal
//! name, and every constant holds its own name.

use std::path::{Path, PathBuf};

fn workspace_crates() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A literal name where a read takes one: `env::var("X")`, `env::var_os("X")`, clap's `env = "X"`.
fn literal_read(line: &str) -> bool {
    let code = line.trim_start();
    if code.starts_with("//") {
        return false;
    }
    code.contains("env::var(\"")
        || code.contains("env::var_os(\"")
        || (code.starts_with("#[arg(") && code.contains("env = \""))
}

#[test]
fn every_environment_read_goes_through_a_declared_constant() {
    let mut files = Vec::new();
    rust_files(&workspace_crates(), &mut files);
    assert!(files.len() > 100, "found only {} files", files.len());
    let this_crate = Path::new(env!("CARGO_MANIFEST_DIR"))
        .canonicalize()
        .expect("crate dir");
    let mut found = Vec::new();
    for file in &files {
        let Ok(canonical) = file.canonicalize() else {
            continue;
        };
        if canonical.starts_with(&this_crate) {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            if literal_read(line) {
                found.push(format!(
                    "{}:{}: {}",
                    canonical.display(),
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "environment variables read by a literal name; declare them in runwright-static's env_vars.rs and \
         read them through the constant:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_each_form_of_literal_read() {
    assert!(literal_read(r#"    let v = std::env::var("FOO").ok();"#));
    assert!(literal_read(r#"    std::env::var_os("FOO")"#));
    assert!(literal_read(r#"    #[arg(long, env = "FOO")]"#));
    assert!(!literal_read(r#"    std::env::var_os(env_vars::FOO)"#));
    assert!(!literal_read(r#"    // std::env::var("FOO")"#));
    assert!(!literal_read(r#"    [runners.labels]\n    env = "prod""#));
}

#[test]
fn every_constant_holds_its_own_name() {
    let source = include_str!("../src/env_vars.rs");
    let mut checked = 0;
    for line in source.lines() {
        let Some(rest) = line.strip_prefix("pub const ") else {
            continue;
        };
        let Some((name, value)) = rest.split_once(": &str = ") else {
            continue;
        };
        assert_eq!(value, format!("\"{name}\";"), "{line}");
        checked += 1;
    }
    assert!(checked >= 50, "only {checked} constants checked");
}
