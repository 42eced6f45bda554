//! Who may use the dashboard and its API (issue 6): anyone who can reach a loopback listener when no token is
//! configured; with `[dashboard] token`, only clients that send it — `Authorization: Bearer <token>` for
//! scripts, or once `?token=<token>` in a browser, which sets a cookie holding a digest of the token (never the
//! token itself) and redirects to the same page without it, so it leaves the address bar and the history.
//! `/metrics` and `/health/*` stay open, as GitLab's runner serves them, so Prometheus scrapes keep working.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;

const COOKIE: &str = "runwright_dashboard";

/// The configured token, kept as its digest: requests are compared against that.
#[derive(Clone)]
pub struct Access {
    digest: Option<String>,
}

impl Access {
    pub fn new(token: Option<&str>) -> Access {
        Access {
            digest: token.filter(|t| !t.is_empty()).map(digest),
        }
    }

    pub fn required(&self) -> bool {
        self.digest.is_some()
    }

    fn accepts_token(&self, token: &str) -> bool {
        self.digest
            .as_deref()
            .is_none_or(|d| same(d.as_bytes(), digest(token).as_bytes()))
    }

    fn accepts_cookie(&self, value: &str) -> bool {
        self.digest
            .as_deref()
            .is_none_or(|d| same(d.as_bytes(), value.as_bytes()))
    }
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(
        format!("runwright-dashboard\0{token}").as_bytes(),
    ))
}

/// Compares without stopping at the first difference (both sides are digests of equal length).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// The query without its `token` parameter.
fn query_without_token(query: &str) -> String {
    query
        .split('&')
        .filter(|kv| !kv.is_empty() && *kv != "token" && !kv.starts_with("token="))
        .collect::<Vec<_>>()
        .join("&")
}

fn token_param(query: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let v = kv.strip_prefix("token=")?;
        Some(
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned(),
        )
    })
}

/// The middleware in front of everything but metrics and health.
pub async fn guard(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    if !access.required() {
        return next.run(req).await;
    }
    let headers = req.headers();
    if bearer(headers).is_some_and(|t| access.accepts_token(t))
        || cookie(headers).is_some_and(|c| access.accepts_cookie(c))
    {
        return next.run(req).await;
    }
    let query = req.uri().query().unwrap_or("");
    if let Some(token) = token_param(query) {
        if access.accepts_token(&token) {
            // Into a cookie, and out of the URL.
            let rest = query_without_token(query);
            let location = if rest.is_empty() {
                req.uri().path().to_string()
            } else {
                format!("{}?{rest}", req.uri().path())
            };
            let cookie = format!(
                "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
                digest(&token)
            );
            let mut resp = StatusCode::SEE_OTHER.into_response();
            let h = resp.headers_mut();
            if let (Ok(l), Ok(c)) = (
                HeaderValue::from_str(&location),
                HeaderValue::from_str(&cookie),
            ) {
                h.insert(header::LOCATION, l);
                h.insert(header::SET_COOKIE, c);
            }
            return resp;
        }
    }
    let hint = "this runwright dashboard needs its token ([dashboard] token of config.toml): send \
                `Authorization: Bearer <token>`, or open the page once with ?token=<token>\n";
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"runwright\"")],
        hint,
    )
        .into_response()
}

/// `listen_address` as GitLab's runner reads it (Go's `host:port`; `:9252` is every interface).
fn normalize(addr: &str) -> String {
    if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_string()
    }
}

/// Resolves `listen_address` to the addresses to bind.
pub async fn resolve(addr: &str) -> anyhow::Result<Vec<SocketAddr>> {
    use anyhow::Context;
    let addr = normalize(addr);
    let found: Vec<SocketAddr> = tokio::net::lookup_host(&addr)
        .await
        .with_context(|| format!("listen_address {addr:?} is not a host:port address"))?
        .collect();
    if found.is_empty() {
        anyhow::bail!("listen_address {addr:?} resolves to no address");
    }
    Ok(found)
}

fn refusal(shown: &str) -> String {
    format!(
        "listen_address {shown} is not a loopback address, and the dashboard and its API would be open to \
         anyone who reaches it: they are not served there (only /metrics and /health are). Set a token in \
         config.toml ([dashboard] token = \"…\"; clients send it as `Authorization: Bearer …`), or \
         [dashboard] enabled = false to silence this, or listen on 127.0.0.1"
    )
}

/// A non-loopback listener serves the dashboard only with a token (issue 6).
pub fn check_exposure(addrs: &[SocketAddr], access: &Access, shown: &str) -> anyhow::Result<()> {
    if access.required() || addrs.iter().all(|a| a.ip().is_loopback()) {
        return Ok(());
    }
    Err(anyhow::anyhow!(refusal(shown)))
}

/// What `runwright config check` says of a `listen_address` the service would refuse (`None`: it is fine, or
/// the address does not resolve here).
pub fn config_warning(config: &runwright_config::Config) -> Option<String> {
    use std::net::ToSocketAddrs;
    let addr = config.listen_address.as_deref().filter(|a| !a.is_empty())?;
    let section = config.dashboard.clone().unwrap_or_default();
    if section.enabled == Some(false) {
        return None;
    }
    let addrs: Vec<SocketAddr> = normalize(addr).to_socket_addrs().ok()?.collect();
    check_exposure(&addrs, &Access::new(section.token.as_deref()), addr)
        .err()
        .map(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_compared_by_digest() {
        let a = Access::new(Some("s3cret"));
        assert!(a.required());
        assert!(a.accepts_token("s3cret"));
        assert!(!a.accepts_token("s3cre"));
        assert!(a.accepts_cookie(&digest("s3cret")));
        assert!(
            !a.accepts_cookie("s3cret"),
            "the cookie holds the digest, not the token"
        );
        assert!(
            !Access::new(Some("")).required(),
            "an empty token is no token"
        );
    }

    #[test]
    fn token_parameter_is_taken_out_of_the_query() {
        assert_eq!(token_param("a=1&token=x%20y&b=2").as_deref(), Some("x y"));
        assert_eq!(query_without_token("a=1&token=x&b=2"), "a=1&b=2");
        assert_eq!(query_without_token("token=x"), "");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; runwright_dashboard=abc; c=d"),
        );
        assert_eq!(cookie(&h), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok"),
        );
        assert_eq!(bearer(&h), Some("tok"));
    }

    #[tokio::test]
    async fn only_loopback_goes_without_a_token() {
        let open = Access::new(None);
        let local = resolve("127.0.0.1:9252").await.expect("resolves");
        assert!(check_exposure(&local, &open, "127.0.0.1:9252").is_ok());
        let all = resolve(":9252").await.expect("resolves");
        let err = check_exposure(&all, &open, ":9252").expect_err("refused");
        assert!(err.to_string().contains("[dashboard] token"), "{err}");
        assert!(check_exposure(&all, &Access::new(Some("t")), ":9252").is_ok());
    }

    #[test]
    fn config_check_warns_of_what_the_service_would_refuse() {
        let cfg = |text: &str| {
            runwright_config::parse(text, std::path::Path::new("config.toml"))
                .expect("config")
                .config
        };
        assert!(config_warning(&cfg("listen_address = \"127.0.0.1:9252\"\n")).is_none());
        let w = config_warning(&cfg("listen_address = \":9252\"\n")).expect("warned");
        assert!(w.contains("[dashboard] token"), "{w}");
        assert!(config_warning(&cfg(
            "listen_address = \":9252\"\n[dashboard]\ntoken = \"t\"\n"
        ))
        .is_none());
        assert!(config_warning(&cfg(
            "listen_address = \":9252\"\n[dashboard]\nenabled = false\n"
        ))
        .is_none());
    }
}
