//! Everything `runwright exec` prints on stdout goes through here, so a closed stdout is handled once: the first
//! write that finds the reader gone (`runwright exec | head`) stops all further output and ends the run as
//! SIGPIPE's default action would — pending jobs canceled, running ones aborted, exit 141 — where `println!`
//! panicked (exit 101) and left the jobs behind.

use std::io::Write;
use std::sync::OnceLock;
use tokio_util::sync::CancellationToken;

/// Cancelled once stdout is found closed.
pub(crate) fn closed() -> &'static CancellationToken {
    static CLOSED: OnceLock<CancellationToken> = OnceLock::new();
    CLOSED.get_or_init(CancellationToken::new)
}

/// Writes `bytes` to stdout unless it is closed; other write errors are dropped as `TraceOut` always did.
pub(crate) fn write(bytes: &[u8]) {
    if closed().is_cancelled() {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            closed().cancel();
        }
    }
}

/// One line on stdout (see [`write`]).
pub(crate) fn line(text: &str) {
    let mut buf = String::with_capacity(text.len() + 1);
    buf.push_str(text);
    buf.push('\n');
    write(buf.as_bytes());
}

/// `println!` for exec's output: through [`line`].
macro_rules! say {
    () => {
        $crate::stdout::line("")
    };
    ($($arg:tt)*) => {
        $crate::stdout::line(&format!($($arg)*))
    };
}
