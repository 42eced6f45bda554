//! Logging to stderr (journald picks it up under systemd), level and format from flags or config.toml.

use tracing_subscriber::{fmt, EnvFilter};

pub struct LogArgs {
    pub debug: bool,
    pub level: Option<String>,
    pub format: Option<String>,
}

/// GitLab's level names mapped onto tracing's.
fn level_name(level: &str) -> &'static str {
    match level {
        "debug" => "debug",
        "warn" | "warning" => "warn",
        "error" | "fatal" | "panic" => "error",
        "trace" => "trace",
        _ => "info",
    }
}

pub fn init(args: &LogArgs, config_level: Option<&str>, config_format: Option<&str>) {
    let level = if args.debug {
        "debug"
    } else {
        level_name(args.level.as_deref().or(config_level).unwrap_or("info"))
    };
    // Our crates at the chosen level, dependencies one notch quieter.
    let filter = EnvFilter::try_from_env(runwright_static::env_vars::RUNWRIGHT_LOG)
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,runwright={level},runwright_client={level},runwright_engine={level},runwright_shell={level}")));
    // Colours only for a person at a terminal; journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let format = args.format.as_deref().or(config_format).unwrap_or("runner");
    let _ = match format {
        "json" => builder.json().try_init(),
        _ => builder.with_target(false).try_init(),
    };
}

/// For the helper verbs: what the libraries they use log at warning level and above goes to standard error,
/// which is the job's output (never the service's log), without timestamps.
pub fn init_helper() {
    let _ = fmt()
        .with_env_filter(EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .try_init();
}
