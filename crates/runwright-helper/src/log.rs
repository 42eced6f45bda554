//! The helper's output, laid out as gitlab-runner's `RunnerTextFormatter` lays out its helper's log lines
//! (runner log/runner_formatter.go): `WARNING: `, `ERROR: `, `FATAL: ` prefixes, the message padded to 50
//! columns when fields follow, then ` key=value` fields sorted by key. Everything goes to standard error, as
//! logrus writes it there (runner log/configuration.go `ConfigureLogging`); the job's trace gets both streams.
//!
//! One difference on purpose: GitLab colours the prefix and writes a colour reset even on plain lines and
//! around every field name; we colour only the prefixed lines, so that `key=value` reads the same in a raw
//! log as in GitLab's page.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// logrus levels the helper uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
    Fatal,
}

impl Level {
    fn prefix(self) -> &'static str {
        match self {
            Level::Info => "",
            Level::Warn => "WARNING: ",
            Level::Error => "ERROR: ",
            Level::Fatal => "FATAL: ",
        }
    }

    fn color(self) -> &'static str {
        match self {
            Level::Info => "",
            Level::Warn => "\x1b[0;33m",
            Level::Error | Level::Fatal => "\x1b[31;1m",
        }
    }
}

const RESET: &str = "\x1b[0;m";

/// Where the helper's lines go: standard error, or a buffer in tests. Clones write to the same place.
#[derive(Clone)]
pub struct Log {
    out: Arc<Mutex<Box<dyn Write + Send>>>,
    color: bool,
}

impl Default for Log {
    fn default() -> Self {
        Log::stderr()
    }
}

impl Log {
    /// Standard error, coloured (job traces render ANSI colours, as GitLab's helper assumes).
    pub fn stderr() -> Log {
        Log {
            out: Arc::new(Mutex::new(Box::new(std::io::stderr()))),
            color: true,
        }
    }

    /// Into `out`, without colours (tests).
    pub fn to(out: Box<dyn Write + Send>) -> Log {
        Log {
            out: Arc::new(Mutex::new(out)),
            color: false,
        }
    }

    /// One line. A write error is ignored: the job's output is gone, nothing would read a complaint.
    pub fn entry(&self, level: Level, message: &str, fields: &[(&str, String)]) {
        let line = format_line(level, message, fields, self.color);
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(line.as_bytes());
            let _ = out.flush();
        }
    }

    pub fn info(&self, message: &str) {
        self.entry(Level::Info, message, &[]);
    }

    pub fn warn(&self, message: &str) {
        self.entry(Level::Warn, message, &[]);
    }

    pub fn error(&self, message: &str) {
        self.entry(Level::Error, message, &[]);
    }

    /// `logrus.Fatalln`: the line, then the verb ends with exit code 1.
    pub fn fatal(&self, message: &str) -> Stop {
        self.entry(Level::Fatal, message, &[]);
        Stop(1)
    }

    /// The helpers' `warningln`: a warning, then exit code 1 (runner commands/helpers/cache_extractor.go).
    pub fn warn_exit(&self, message: &str) -> Stop {
        self.warn(message);
        Stop(1)
    }
}

/// A verb ended early with this exit code (its line already printed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop(pub u8);

/// The result of a verb: `Err` carries the exit code.
pub type Outcome = Result<(), Stop>;

fn format_line(level: Level, message: &str, fields: &[(&str, String)], color: bool) -> String {
    let prefix = level.prefix();
    let (c, r) = if color && level != Level::Info {
        (level.color(), RESET)
    } else {
        ("", "")
    };
    let mut line = format!("{c}{prefix}{message}{r}");
    if !fields.is_empty() {
        // `%-*s` with 50 - len(prefix): the message column, then a space before every field.
        let width = 50usize.saturating_sub(prefix.len());
        let pad = width.saturating_sub(message.chars().count());
        line = format!("{c}{prefix}{message}{}{r} ", " ".repeat(pad));
        let mut sorted: Vec<_> = fields.iter().collect();
        sorted.sort_by_key(|(k, _)| *k);
        for (k, v) in sorted {
            line.push_str(&format!(" {k}={v}"));
        }
    }
    line.push('\n');
    line
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A [`Log`] whose lines a test reads back.
    #[derive(Clone, Default)]
    pub struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        pub fn log(&self) -> Log {
            Log::to(Box::new(self.clone()))
        }
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().map(|v| v.clone()).unwrap_or_default())
                .into_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_follow_the_runner_formatter() {
        assert_eq!(
            format_line(Level::Warn, "Cache file does not exist", &[], false),
            "WARNING: Cache file does not exist\n"
        );
        assert_eq!(
            format_line(
                Level::Info,
                "Downloading artifacts from coordinator... ok",
                &[("token", "abc".into()), ("id", "7".into())],
                false
            ),
            "Downloading artifacts from coordinator... ok        id=7 token=abc\n"
        );
        assert_eq!(
            format_line(Level::Fatal, "Incomplete arguments", &[], true),
            "\x1b[31;1mFATAL: Incomplete arguments\x1b[0;m\n"
        );
    }
}
