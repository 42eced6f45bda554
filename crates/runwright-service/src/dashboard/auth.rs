//! Who may use the dashboard and its API (issues 6 and 17): clients that send its token —
//! `Authorization: Bearer <token>` for scripts, or once `?token=<token>` in a browser, which sets a session
//! cookie (a signed expiry, never the token) and redirects to the same page of the same host without it, so it
//! leaves the address bar and the history. The token is `[dashboard] token`, else the one the service generated
//! (`token.rs`); only `require_token = false` opens a loopback dashboard to every local user.
//!
//! Before the token, the `Host` header (DNS rebinding: a web page whose name a hostile DNS server points at
//! 127.0.0.1 would otherwise talk to the dashboard as its own origin): allowed are the address the client
//! connected to, `localhost`, the host of `listen_address` and `[dashboard] allowed_hosts`.
//!
//! `/metrics` and `/health/*` stay open, as GitLab's runner serves them, so Prometheus scrapes keep working; a
//! scrape that is not trusted (neither from loopback by an allowed name, nor with the token) gets the counts
//! without runwright's per-project labels (`crate::metrics::Metrics::render_public`).
//!
//! Every answer carries the headers of [`security_headers`].

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

const COOKIE: &str = "runwright_dashboard";

/// How long a browser session lasts: after that, `?token=` again. The server checks it too (the cookie holds
/// its signed expiry), so a copied cookie stops working when the browser's would have gone.
pub const SESSION: Duration = Duration::from_secs(12 * 3600);

/// Both ends of a connection: the client (is it on this host?) and the address it reached (a `Host` that
/// names it is not a rebinding).
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub remote: SocketAddr,
    pub local: Option<SocketAddr>,
}

impl Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Peer {
            remote: *stream.remote_addr(),
            local: stream.io().local_addr().ok(),
        }
    }
}

/// The names a `Host` header may carry (lower case, without a trailing dot).
#[derive(Clone, Debug)]
pub struct Hosts {
    names: Vec<String>,
}

impl Hosts {
    /// `localhost`, the host of `listen_address` when it is a name, and `allowed`.
    pub fn new(listen_address: &str, allowed: &[String]) -> Hosts {
        let mut names = vec!["localhost".to_string()];
        if let Some(h) = host_part(listen_address).filter(|h| !h.is_empty()) {
            names.push(h);
        }
        names.extend(allowed.iter().filter_map(|a| host_part(a)));
        Hosts { names }
    }

    /// Whether `host` (a `Host` header: name or address, maybe a port) is allowed on a connection that reached
    /// `local`: one of the names, or the address reached itself (a browser that asks for an address cannot be
    /// rebound).
    fn allows(&self, host: &str, local: Option<IpAddr>) -> bool {
        let Some(h) = host_part(host) else {
            return false;
        };
        if let Ok(ip) = h.parse::<IpAddr>() {
            if local.is_some_and(|l| canonical(l) == canonical(ip)) {
                return true;
            }
        }
        self.names.contains(&h)
    }
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The host of `host[:port]`, `[v6][:port]` or `v6`, lower case, without brackets and a trailing dot.
fn host_part(s: &str) -> Option<String> {
    let s = s.trim();
    let host = if let Some(rest) = s.strip_prefix('[') {
        rest.split_once(']')?.0
    } else if s.matches(':').count() > 1 {
        // A bare IPv6 address (only in our own config: a Host header brackets it).
        s
    } else {
        match s.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            Some(_) => return None,
            None => s,
        }
    };
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

/// The token, kept as its digest (requests are compared against that), and who may ask.
#[derive(Clone)]
pub struct Access {
    digest: Option<String>,
    /// The token is `[dashboard] token` (the only kind that opens a non-loopback listener).
    configured: bool,
    pub hosts: Hosts,
}

impl Access {
    pub fn new(token: Option<&str>, configured: bool, hosts: Hosts) -> Access {
        Access {
            digest: token.filter(|t| !t.is_empty()).map(digest),
            configured,
            hosts,
        }
    }

    /// From `[dashboard]` alone (`config check`, tests): the configured token or none.
    pub fn configured_only(section: &runwright_config::DashboardConfig, addr: &str) -> Access {
        let token = section.token.as_deref().filter(|t| !t.is_empty());
        Access::new(
            token,
            token.is_some(),
            Hosts::new(addr, &section.allowed_hosts),
        )
    }

    pub fn required(&self) -> bool {
        self.digest.is_some()
    }

    fn accepts_token(&self, token: &str) -> bool {
        self.digest
            .as_deref()
            .is_some_and(|d| same(d.as_bytes(), digest(token).as_bytes()))
    }

    /// A session cookie: `<expiry>.<signature>`, not expired, signed with this token.
    fn accepts_session(&self, value: &str, now: u64) -> bool {
        let Some(d) = self.digest.as_deref() else {
            return false;
        };
        let Some((exp, _)) = value.split_once('.') else {
            return false;
        };
        let Ok(exp) = exp.parse::<u64>() else {
            return false;
        };
        exp > now
            && exp <= now + SESSION.as_secs()
            && same(value.as_bytes(), session_value(d, exp).as_bytes())
    }

    /// The client sent the token (header or session cookie).
    fn authenticated(&self, headers: &HeaderMap) -> bool {
        bearer(headers).is_some_and(|t| self.accepts_token(t))
            || cookie(headers).is_some_and(|c| self.accepts_session(c, unix_now()))
    }

    /// Whether a `/metrics` request may see everything: it sent the token, or comes from this host (not through
    /// a proxy) by an allowed name.
    pub fn trusts_scrape(&self, req: &Request, peer: Option<Peer>) -> bool {
        let headers = req.headers();
        if self.authenticated(headers) {
            return true;
        }
        let Some(peer) = peer else {
            return false;
        };
        let proxied =
            headers.contains_key("x-forwarded-for") || headers.contains_key(header::FORWARDED);
        canonical(peer.remote.ip()).is_loopback()
            && !proxied
            && host_of(req).is_some_and(|h| self.hosts.allows(h, peer.local.map(|l| l.ip())))
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(
        format!("runwright-dashboard\0{token}").as_bytes(),
    ))
}

/// `<exp>.<hex sha256 of a label, exp and the token's digest>`: the secret last, so nothing can be appended.
fn session_value(digest: &str, exp: u64) -> String {
    let sig = hex::encode(Sha256::digest(
        format!("runwright-dashboard-session\0{exp}\0{digest}").as_bytes(),
    ));
    format!("{exp}.{sig}")
}

/// Compares without stopping at the first difference.
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

/// The host a request names: its `Host` header, or the authority of an HTTP/2 request.
fn host_of(req: &Request) -> Option<&str> {
    match req.headers().get(header::HOST) {
        Some(h) => h.to_str().ok(),
        None => req.uri().authority().map(|a| a.as_str()),
    }
}

/// The client reached us over TLS (a proxy in front says so). Trusted from anyone: it only adds `Secure` to
/// the cookie, which makes a browser keep it off plain HTTP — a client that lies only loses its own session.
fn behind_tls(headers: &HeaderMap) -> bool {
    let said = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",")
    };
    let xfp = said("x-forwarded-proto");
    let forwarded = said("forwarded");
    xfp.split(',')
        .next()
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
        || forwarded
            .split([',', ';'])
            .filter_map(|kv| kv.trim().split_once('='))
            .any(|(k, v)| {
                k.trim().eq_ignore_ascii_case("proto")
                    && v.trim().trim_matches('"').eq_ignore_ascii_case("https")
            })
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

/// Where the `?token=` redirect goes: the same path on the same host. Leading slashes and backslashes become
/// one slash, so `//evil.example/` (a scheme-relative URL) or `/\evil.example` (which browsers read alike)
/// cannot send the browser to another host with its fresh session.
fn same_host_location(path: &str, rest_of_query: &str) -> String {
    let path = format!("/{}", path.trim_start_matches(['/', '\\']));
    if rest_of_query.is_empty() {
        path
    } else {
        format!("{path}?{rest_of_query}")
    }
}

/// The middleware in front of the dashboard's pages and API: the `Host` check, then the token.
pub async fn guard(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ConnectInfo<Peer>>().map(|c| c.0);
    let local = peer.and_then(|p| p.local).map(|l| l.ip());
    if !host_of(&req).is_some_and(|h| access.hosts.allows(h, local)) {
        return (
            StatusCode::FORBIDDEN,
            "this runwright dashboard does not answer to this Host name (DNS rebinding protection): open it by \
             its address, by localhost, or add the name to [dashboard] allowed_hosts in config.toml\n",
        )
            .into_response();
    }
    if !access.required() || access.authenticated(req.headers()) {
        return next.run(req).await;
    }
    let query = req.uri().query().unwrap_or("");
    if let Some(token) = token_param(query) {
        if access.accepts_token(&token) {
            // Into a cookie, and out of the URL.
            let location = same_host_location(req.uri().path(), &query_without_token(query));
            let exp = unix_now() + SESSION.as_secs();
            let value = session_value(access.digest.as_deref().unwrap_or_default(), exp);
            let cookie = format!(
                "{COOKIE}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
                SESSION.as_secs(),
                if behind_tls(req.headers()) {
                    "; Secure"
                } else {
                    ""
                }
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
    let hint = "this runwright dashboard needs its token ([dashboard] token of config.toml, or the one the \
                service generated in .runwright_dashboard_token beside it): send `Authorization: Bearer \
                <token>`, or open the page once with ?token=<token>\n";
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"runwright\"")],
        hint,
    )
        .into_response()
}

/// The page loads only its own script and style, is never framed, and nothing is sniffed into another type or
/// leaks the URL (a `?token=`) as a referrer.
const SECURITY_HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
];

/// Adds [`SECURITY_HEADERS`] to every answer of the listener.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
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

/// A non-loopback listener serves the dashboard only with a configured token (issue 6): a generated one is for
/// this host's operator.
pub fn check_exposure(addrs: &[SocketAddr], access: &Access, shown: &str) -> anyhow::Result<()> {
    if (access.required() && access.configured) || addrs.iter().all(|a| a.ip().is_loopback()) {
        return Ok(());
    }
    Err(anyhow::anyhow!(refusal(shown)))
}

/// What `runwright config check` says of a `listen_address` the service would refuse, or of a dashboard opened
/// to every local user (`None`: it is fine, or the address does not resolve here).
pub fn config_warning(config: &runwright_config::Config) -> Option<String> {
    use std::net::ToSocketAddrs;
    let addr = config.listen_address.as_deref().filter(|a| !a.is_empty())?;
    let section = config.dashboard.clone().unwrap_or_default();
    if section.enabled == Some(false) {
        return None;
    }
    let addrs: Vec<SocketAddr> = normalize(addr).to_socket_addrs().ok()?.collect();
    check_exposure(&addrs, &Access::configured_only(&section, addr), addr)
        .err()
        .map(|e| e.to_string())
        .or_else(|| {
            let open = section.require_token == Some(false)
                && section.token.as_deref().is_none_or(str::is_empty);
            open.then(|| {
                format!(
                    "[dashboard] require_token = false: every local user, and every job on this host, can read \
                     every job's trace on listen_address {addr}"
                )
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Hosts {
        Hosts::new("127.0.0.1:9252", &["runner.example.com".into()])
    }

    fn access(token: Option<&str>) -> Access {
        Access::new(token, token.is_some(), hosts())
    }

    #[test]
    fn tokens_are_compared_by_digest() {
        let a = access(Some("s3cret"));
        assert!(a.required());
        assert!(a.accepts_token("s3cret"));
        assert!(!a.accepts_token("s3cre"));
        assert!(!access(Some("")).required(), "an empty token is no token");
        assert!(!access(None).accepts_token(""));
    }

    #[test]
    fn sessions_expire_and_are_signed_with_the_token() {
        let a = access(Some("s3cret"));
        let d = digest("s3cret");
        let now = 1_800_000_000;
        let v = session_value(&d, now + 60);
        assert!(a.accepts_session(&v, now));
        assert!(!a.accepts_session(&v, now + 60), "expired");
        assert!(!v.contains("s3cret") && !v.contains(&d), "{v}");
        // Another expiry with the same signature, a far expiry, another token's session: refused.
        let sig = v.split_once('.').expect("dot").1;
        assert!(!a.accepts_session(&format!("{}.{sig}", now + 120), now));
        let far = now + SESSION.as_secs() + 10;
        assert!(!a.accepts_session(&session_value(&d, far), now));
        assert!(!a.accepts_session(&session_value(&digest("other"), now + 60), now));
        assert!(!a.accepts_session("garbage", now));
    }

    #[test]
    fn hosts_are_the_reached_address_localhost_and_configured_names() {
        let h = hosts();
        let lo: IpAddr = "127.0.0.1".parse().expect("ip");
        for ok in [
            "127.0.0.1:9252",
            "localhost:9252",
            "LOCALHOST",
            "localhost.:9252",
            "runner.example.com",
            "Runner.Example.Com:443",
        ] {
            assert!(h.allows(ok, Some(lo)), "{ok}");
        }
        for bad in [
            "evil.example:9252",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "10.0.0.5:9252",
            "",
            "localhost:x",
        ] {
            assert!(!h.allows(bad, Some(lo)), "{bad}");
        }
        // The address reached, whichever it is; IPv6 in brackets; IPv4-mapped.
        let v6: IpAddr = "::1".parse().expect("ip");
        assert!(h.allows("[::1]:9252", Some(v6)));
        assert!(h.allows(
            "10.0.0.5:9252",
            Some("::ffff:10.0.0.5".parse().expect("ip"))
        ));
        assert!(!h.allows("10.0.0.5", None));
        // A listen_address given by name.
        assert!(Hosts::new("ci-box.lan:9252", &[]).allows("ci-box.lan:9252", None));
    }

    #[test]
    fn the_redirect_stays_on_the_host() {
        assert_eq!(same_host_location("/", ""), "/");
        assert_eq!(
            same_host_location("/api/v1/jobs", "a=1"),
            "/api/v1/jobs?a=1"
        );
        assert_eq!(
            same_host_location("//evil.example/x", ""),
            "/evil.example/x"
        );
        assert_eq!(
            same_host_location("/\\evil.example", "a=1"),
            "/evil.example?a=1"
        );
        assert_eq!(
            same_host_location("/\\/\\//evil.example", ""),
            "/evil.example"
        );
    }

    #[test]
    fn tls_is_what_a_proxy_says() {
        let mut h = HeaderMap::new();
        assert!(!behind_tls(&h));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(behind_tls(&h));
        let mut h = HeaderMap::new();
        h.insert(
            header::FORWARDED,
            HeaderValue::from_static("for=192.0.2.60;proto=https;by=203.0.113.43"),
        );
        assert!(behind_tls(&h));
        h.insert(header::FORWARDED, HeaderValue::from_static("proto=http"));
        assert!(!behind_tls(&h));
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
        let open = access(None);
        let local = resolve("127.0.0.1:9252").await.expect("resolves");
        assert!(check_exposure(&local, &open, "127.0.0.1:9252").is_ok());
        let all = resolve(":9252").await.expect("resolves");
        let err = check_exposure(&all, &open, ":9252").expect_err("refused");
        assert!(err.to_string().contains("[dashboard] token"), "{err}");
        assert!(check_exposure(&all, &access(Some("t")), ":9252").is_ok());
        // A generated token is for this host: it does not open a listener on the network.
        let generated = Access::new(Some("t"), false, hosts());
        assert!(check_exposure(&all, &generated, ":9252").is_err());
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
        let w = config_warning(&cfg(
            "listen_address = \"127.0.0.1:9252\"\n[dashboard]\nrequire_token = false\n",
        ))
        .expect("warned");
        assert!(w.contains("every local user"), "{w}");
    }
}
