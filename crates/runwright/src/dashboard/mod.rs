//! `listen_address` (issue 6): one HTTP listener for `/metrics` and `/health/*` (open, as GitLab's runner
//! serves them), and runwright's web dashboard at `/` with its JSON API under `/api/v1` (behind
//! [`auth::guard`]). The page is plain HTML, CSS and JavaScript compiled into the binary (no build step); it
//! renders traces (colours, collapsible sections) in the browser from the raw bytes the API serves.
//!
//! State owned: the configuration the service runs with and its invalid `[[runners]]` entries (both replaced on
//! reload), and the last disk measurement.

mod api;
pub mod auth;
mod disk;

use crate::journal::JobJournal;
use crate::metrics::Metrics;
use anyhow::Context;
use axum::http::{header, StatusCode};
use axum::routing::get;
use runwright_config::{Config, InvalidRunner};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What the dashboard and its API read.
pub struct Dashboard {
    pub metrics: Arc<Metrics>,
    pub journal: Option<Arc<JobJournal>>,
    /// The service's working directory (relative builds and cache dirs are taken from it).
    pub working_dir: PathBuf,
    config: Mutex<Arc<Config>>,
    /// `[[runners]]` entries the service skips because they failed validation (issue 16 item 8).
    invalid_runners: Mutex<Arc<Vec<InvalidRunner>>>,
    disk: tokio::sync::Mutex<Option<(std::time::Instant, serde_json::Value)>>,
}

impl Dashboard {
    pub fn new(
        metrics: Arc<Metrics>,
        journal: Option<Arc<JobJournal>>,
        working_dir: PathBuf,
        config: &Config,
    ) -> Arc<Dashboard> {
        Arc::new(Dashboard {
            metrics,
            journal,
            working_dir,
            config: Mutex::new(Arc::new(config.clone())),
            invalid_runners: Mutex::new(Arc::default()),
            disk: tokio::sync::Mutex::new(None),
        })
    }

    /// The configuration after a reload (runner entries, their directories).
    pub fn set_config(&self, config: &Config) {
        if let Ok(mut c) = self.config.lock() {
            *c = Arc::new(config.clone());
        }
    }

    /// The entries the service skips, after start or a reload.
    pub fn set_invalid_runners(&self, invalid: &[InvalidRunner]) {
        if let Ok(mut c) = self.invalid_runners.lock() {
            *c = Arc::new(invalid.to_vec());
        }
    }

    pub fn invalid_runners(&self) -> Arc<Vec<InvalidRunner>> {
        self.invalid_runners
            .lock()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn config(&self) -> Arc<Config> {
        self.config
            .lock()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

fn asset(kind: &'static str, body: &'static str) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn metrics_routes(metrics: Arc<Metrics>) -> axum::Router {
    let m = metrics.clone();
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        m.render(),
                    )
                }
            }),
        )
        .route("/health/live", get(|| async { "ok\n" }))
        .route(
            "/health/ready",
            get(move || {
                let m = metrics.clone();
                async move {
                    if m.ready() {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        )
}

/// The dashboard's pages and API, behind the token check.
fn dashboard_routes(d: Arc<Dashboard>, access: Arc<auth::Access>) -> axum::Router {
    axum::Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route("/api/v1/runners", get(api::runners))
        .route("/api/v1/jobs", get(api::jobs))
        .route("/api/v1/jobs/{key}", get(api::job))
        .route("/api/v1/jobs/{key}/trace", get(api::trace))
        .route("/api/v1/disk", get(api::disk_use))
        .with_state(d)
        .layer(axum::middleware::from_fn_with_state(access, auth::guard))
}

/// Serves `listen_address` until `stop` fires: metrics and health always, the dashboard unless
/// `[dashboard] enabled = false`. On a non-loopback address without `[dashboard] token` the dashboard and its
/// API are refused (403 with what to set; a warning in the log) while metrics and health are served.
pub async fn serve(
    addr: &str,
    dashboard: Arc<Dashboard>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let config = dashboard.config();
    let section = config.dashboard.clone().unwrap_or_default();
    let enabled = section.enabled != Some(false);
    let access = Arc::new(auth::Access::new(section.token.as_deref()));
    let addrs = auth::resolve(addr).await?;
    // GitLab's runner serves /metrics on any address it is given (`:9252` is common): that keeps working. Only
    // the dashboard and its API, which show traces, need the token off loopback; without one they answer 403
    // with what to set.
    let refused = if enabled {
        auth::check_exposure(&addrs, &access, addr).err()
    } else {
        None
    };
    if let Some(why) = &refused {
        tracing::warn!("{why}");
    }
    let listener = tokio::net::TcpListener::bind(&addrs[..])
        .await
        .with_context(|| format!("listening on listen_address {addr}"))?;
    let mut app = metrics_routes(dashboard.metrics.clone());
    let served = enabled && refused.is_none();
    match (enabled, refused) {
        (true, None) => app = app.merge(dashboard_routes(dashboard, access.clone())),
        (true, Some(why)) => {
            let why = format!("{why}\n");
            app = app.fallback(move || {
                let why = why.clone();
                async move { (StatusCode::FORBIDDEN, why) }
            });
        }
        (false, _) => {}
    }
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| addr.to_string());
    tracing::info!(
        address = %local,
        dashboard = served,
        token = access.required(),
        "listen_address: metrics, health{} listening",
        if served { " and dashboard" } else { "" }
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .context("listen_address server")
}
