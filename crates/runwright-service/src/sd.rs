//! The service's side of operating it: systemd notifications (`Type=notify` readiness once every runner
//! entry has polled, `WATCHDOG=1` pings, `STOPPING=1`, `STATUS=`; the `$NOTIFY_SOCKET` datagram protocol of
//! sd_notify(3), written directly), the state file for `status`/`list`, and automatic token rotation at 75%
//! of a token's lifetime (reference `protocol.md` §1.6; runner commands/multi.go `resetRunnerTokens`).

use crate::gitlab::{fmt_time, now};
use crate::rotation::{rotate, rotation_due};
use crate::state::Registry;
use runwright_config::short_token;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Sends one notification to systemd when the service runs under it (`$NOTIFY_SOCKET`); a no-op otherwise.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os(runwright_static::env_vars::NOTIFY_SOCKET) else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), Path::new(&path))
    };
    if let Err(e) = sent {
        tracing::debug!("sd_notify {state:?}: {e}");
    }
}

/// Half the watchdog interval systemd asked for (`WATCHDOG_USEC`, for this pid), if any.
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var(runwright_static::env_vars::WATCHDOG_USEC)
        .ok()?
        .parse()
        .ok()?;
    if let Ok(pid) = std::env::var(runwright_static::env_vars::WATCHDOG_PID) {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Until `stop`: writes the state file when it changed, says READY=1 once every entry has polled, pings the
/// watchdog.
pub async fn supervise(reg: Arc<Registry>, state_file: PathBuf, stop: CancellationToken) {
    let watchdog = watchdog_interval();
    let mut last_ping = tokio::time::Instant::now();
    let mut ready = false;
    loop {
        if !ready && reg.all_polled() {
            ready = true;
            reg.set_ready();
            tracing::info!("every runner entry has polled: service ready");
            notify("READY=1\nSTATUS=polling GitLab");
        }
        if let Some(w) = watchdog {
            if last_ping.elapsed() >= w {
                notify("WATCHDOG=1");
                last_ping = tokio::time::Instant::now();
            }
        }
        reg.write(&state_file);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.cancelled() => {
                reg.stopping();
                reg.write(&state_file);
                return;
            }
        }
    }
}

/// Rotates tokens as they reach 75% of their lifetime, saving each new token into `config_path` (the file
/// watcher then restarts that entry's pollers with it). Runs until `stop`.
pub async fn rotate_tokens(config_path: PathBuf, stop: CancellationToken) {
    let mut warned = std::collections::HashSet::new();
    loop {
        let mut next_check = Duration::from_secs(60);
        if let Ok(loaded) = runwright_config::load(&config_path) {
            let now = now();
            for r in &loaded.config.runners {
                let Some(due) = rotation_due(r) else { continue };
                if r.feature_flag("FF_DISABLE_AUTOMATIC_TOKEN_ROTATION") == Some(true) {
                    if warned.insert(r.token.clone()) {
                        tracing::warn!(runner = %r.name, token = %short_token(&r.token), "automatic token rotation is disabled (FF_DISABLE_AUTOMATIC_TOKEN_ROTATION); the token expires at {}", fmt_time(r.token_expires_at.unwrap_or(due)));
                    }
                    continue;
                }
                if due <= now {
                    tracing::info!(runner = %r.name, token = %short_token(&r.token), "token reached 75% of its lifetime: resetting it");
                    next_check = match rotate(&config_path, r, None).await {
                        Ok(expires) => {
                            tracing::info!(
                                runner = %r.name,
                                expires = %expires.map(fmt_time).unwrap_or_else(|| "never".into()),
                                "runner token rotated and saved"
                            );
                            // Reload now (SIGHUP), not at the next mtime check: the old token is already
                            // refused, and 403s count towards the unhealthy back-off.
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::this(),
                                nix::sys::signal::Signal::SIGHUP,
                            );
                            // Read the file again before the next one: it just changed.
                            Duration::from_millis(100)
                        }
                        Err(e) => {
                            tracing::error!(runner = %r.name, "{e:#}; trying again in a minute");
                            Duration::from_secs(60)
                        }
                    };
                    break;
                }
                let wait = (due - now).try_into().unwrap_or(Duration::from_secs(60));
                next_check = next_check.min(wait);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(next_check) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// The rotation time of an entry as the state file shows it.
pub fn rotation_label(r: &runwright_config::RunnerConfig) -> Option<String> {
    rotation_due(r).map(fmt_time)
}

/// Entry list for [`Registry::set_entries`].
pub fn entries(config: &runwright_config::Config) -> Vec<(String, String, String, Option<String>)> {
    config
        .runners
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                r.url.clone(),
                r.token.clone(),
                rotation_label(r),
            )
        })
        .collect()
}
