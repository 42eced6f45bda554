//! `cache-init`, `read-logs` and `health-check` (runner commands/helpers/cache_init.go, read_logs.go,
//! health_check.go): the helper verbs that move no archive.

use crate::flags::go_duration;
use crate::log::{Level, Log, Outcome, Stop};
use clap::Args;
use std::io::{BufRead, Seek, Write};
use std::path::PathBuf;
use std::time::Duration;

/// `cache-init`: the paths to open up.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheInitArgs {
    /// Paths (directories or files) to give mode 0777.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// `cache-init`: `chmod 0777` each path so that a job running as any user can use the cache volume; a
/// failure is logged and the rest still done (runner `CacheInitCommand.Execute`).
pub fn cache_init(a: &CacheInitArgs, log: &Log) -> Outcome {
    use std::os::unix::fs::PermissionsExt;
    if a.paths.is_empty() {
        return Err(log.fatal("No arguments passed, at least 1 path is required."));
    }
    for p in &a.paths {
        if let Err(e) = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)) {
            log.entry(
                Level::Error,
                "failed to chmod path",
                &[("error", format!("chmod {}: {e}", p.display()))],
            );
        }
    }
    Ok(())
}

/// `read-logs`'s flags.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct ReadLogsArgs {
    /// The log file to follow.
    #[arg(long = "path", default_value = "")]
    pub path: PathBuf,
    /// Where to start reading, in bytes.
    #[arg(long = "offset", default_value_t = 0)]
    pub offset: u64,
    /// How long to wait for the file to appear (Go duration).
    #[arg(long = "wait-file-timeout", default_value = "1s", value_parser = go_duration)]
    pub wait_file_timeout: Duration,
}

/// `common.DefaultReaderBufferSize`: the longest piece of a line printed at once.
const READER_BUFFER_SIZE: usize = 16 * 1024;
/// `outputLogFileNotExistsExitCode`.
const FILE_NOT_EXISTS_EXIT_CODE: u8 = 100;
const CHECK_FILE_EXISTS_INTERVAL: Duration = Duration::from_secs(1);
const POLL_FILE_CONTENTS: Duration = Duration::from_millis(500);

/// `read-logs`: follows a log file from `--offset`, printing each line to standard output prefixed with the
/// offset just past it (`<offset> <line>`), forever; exit 100 when the file is deleted, 1 with a line on
/// standard output on another error (not there within `--wait-file-timeout`, unreadable), as gitlab-runner's
/// `ReadLogsCommand`, whose output the Kubernetes executor parses.
pub fn read_logs(a: &ReadLogsArgs) -> Outcome {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match follow(a, &mut out, false) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Stop(FILE_NOT_EXISTS_EXIT_CODE)),
        Err(e) => {
            let _ = writeln!(out, "error reading logs from {}: {e}", a.path.display());
            Err(Stop(1))
        }
    }
}

/// The loop of `read-logs`; `stop_at_eof` ends it at the first end of file (tests).
pub(crate) fn follow(
    a: &ReadLogsArgs,
    out: &mut dyn Write,
    stop_at_eof: bool,
) -> std::io::Result<()> {
    let attempts =
        (a.wait_file_timeout.as_secs_f64() / CHECK_FILE_EXISTS_INTERVAL.as_secs_f64()) as u64;
    if attempts < 1 {
        return Err(std::io::Error::other(
            "no attempts to open log file configured",
        ));
    }
    let mut file = None;
    for _ in 0..attempts {
        match std::fs::File::open(&a.path) {
            Ok(f) => {
                file = Some(f);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::thread::sleep(CHECK_FILE_EXISTS_INTERVAL)
            }
            Err(e) => return Err(e),
        }
    }
    let Some(mut file) = file else {
        return Err(std::io::Error::other(
            "timeout waiting for file to be created",
        ));
    };
    file.seek(std::io::SeekFrom::Start(a.offset))?;
    let mut reader = std::io::BufReader::with_capacity(READER_BUFFER_SIZE, file);
    let mut offset = a.offset;
    let mut buf = Vec::with_capacity(READER_BUFFER_SIZE);
    loop {
        buf.clear();
        // Up to a newline or a full buffer, as bufio's ReadSlice.
        let n = std::io::Read::take(&mut reader, READER_BUFFER_SIZE as u64)
            .read_until(b'\n', &mut buf)?;
        if n > 0 {
            offset += n as u64;
            if buf.last() != Some(&b'\n') {
                buf.push(b'\n');
            }
            write!(out, "{offset} ")?;
            out.write_all(&buf)?;
            out.flush()?;
            continue;
        }
        // End of file: a file deleted from outside ends the loop as "does not exist" (`checkedFile`).
        std::fs::metadata(&a.path)?;
        if stop_at_eof {
            return Ok(());
        }
        std::thread::sleep(POLL_FILE_CONTENTS);
    }
}

/// `health-check`'s flags.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthCheckArgs {
    /// Service port (repeatable; without one, the `*_TCP_ADDR`/`*_TCP_PORT` variables are used).
    #[arg(short = 'p', long = "port")]
    pub ports: Vec<String>,
}

/// `health-check`: waits until a TCP connection to the service succeeds. With `--port`, on localhost and for
/// every port; otherwise the address and ports of the `*_TCP_ADDR`/`*_TCP_PORT` variables Docker links set,
/// until the first connects (runner `HealthCheckCommand.Execute`).
pub async fn health_check(a: HealthCheckArgs, log: &Log) -> Outcome {
    let (addr, ports, wait_all) = if a.ports.is_empty() {
        let mut addr = String::new();
        let mut ports = Vec::new();
        for (k, v) in std::env::vars() {
            if k.ends_with("_TCP_ADDR") {
                addr = v;
            } else if k.ends_with("_TCP_PORT") {
                ports.push(v);
            }
        }
        (addr, ports, false)
    } else {
        ("localhost".to_owned(), a.ports.clone(), true)
    };
    if addr.is_empty() || ports.is_empty() {
        return Err(log.fatal("No HOST or PORT found"));
    }
    let stdout = |line: String| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    stdout(format!(
        "waiting for TCP connection to {addr} on [{}]...",
        ports.join(" ")
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for port in ports {
        let addr = addr.clone();
        tasks.spawn(async move {
            loop {
                stdout(format!("dialing {addr}:{port}..."));
                let dial = tokio::time::timeout(
                    Duration::from_secs(300),
                    tokio::net::TcpStream::connect((
                        addr.as_str(),
                        port.parse::<u16>().unwrap_or(0),
                    )),
                )
                .await;
                if let Ok(Ok(_)) = dial {
                    stdout(format!("dial succeeded on {addr}:{port}. Exiting..."));
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    if wait_all {
        while tasks.join_next().await.is_some() {}
    } else {
        tasks.join_next().await;
        tasks.abort_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_logs_prefixes_each_line_with_the_offset_after_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log");
        std::fs::write(&p, "ab\ncde\nf").unwrap();
        let a = ReadLogsArgs {
            path: p.clone(),
            offset: 3,
            wait_file_timeout: Duration::from_secs(1),
        };
        let mut out = Vec::new();
        follow(&a, &mut out, true).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "7 cde\n8 f\n");
        let missing = ReadLogsArgs {
            path: d.path().join("none"),
            ..a
        };
        let err = follow(&missing, &mut Vec::new(), true).unwrap_err();
        assert_eq!(err.to_string(), "timeout waiting for file to be created");
    }

    #[tokio::test]
    async fn health_check_waits_for_every_port_given() {
        let a = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ports = vec![
            a.local_addr().unwrap().port().to_string(),
            b.local_addr().unwrap().port().to_string(),
        ];
        let cap = crate::log::testing::Captured::default();
        let done = tokio::time::timeout(
            Duration::from_secs(30),
            health_check(HealthCheckArgs { ports }, &cap.log()),
        )
        .await;
        assert_eq!(done.ok(), Some(Ok(())));
    }

    #[test]
    fn cache_init_opens_up_the_paths() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let cap = crate::log::testing::Captured::default();
        cache_init(
            &CacheInitArgs {
                paths: vec![d.path().to_path_buf(), d.path().join("missing")],
            },
            &cap.log(),
        )
        .unwrap();
        let mode = std::fs::metadata(d.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o777);
        assert!(
            cap.text().starts_with("ERROR: failed to chmod path"),
            "{}",
            cap.text()
        );
        assert_eq!(
            cache_init(&CacheInitArgs::default(), &cap.log()),
            Err(Stop(1))
        );
    }
}
