//! The runner-management calls of GitLab's API: register, verify, unregister (whole runner or this host's
//! manager), token reset (by runner token or by an access token), and the admin read of a runner
//! (reference `protocol.md` §1.2–§1.6; runner network/gitlab.go `RegisterRunner`, `VerifyRunner`,
//! `UnregisterRunner`, `UnregisterRunnerManager`, `ResetToken`, `ResetTokenWithPAT`; GitLab's REST API
//! `GET /runners/:id`).
//!
//! Every call answers `Ok` only on the status GitLab's runner accepts (`201` register and reset, `200` verify,
//! `204` unregister) and otherwise an [`ApiError`] holding the status (if any) and a message without secrets.

use std::fmt;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT};
use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::client::{
    insert_secret_header, json_request, status_text, Prepared, HEADER_RUNNER_TOKEN,
};
use crate::Client;
use runwright_api::types::VersionInfo;

/// A failed runner-management call: the HTTP status when GitLab answered, and a one-line message naming
/// method and URL (never a token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// `None` when no answer arrived (connection refused, DNS, TLS, timeout).
    pub status: Option<u16>,
    /// `POST http://host/api/v4/runners: 403 Forbidden` style, or the transport error.
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

/// `POST /api/v4/runners` body (runner common/network.go `RegisterRunnerRequest`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RegisterRequest {
    /// The registration token.
    pub token: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub maintenance_note: String,
    /// Comma-separated, as GitLab's runner sends it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tag_list: String,
    pub run_untagged: bool,
    pub locked: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub access_level: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum_timeout: Option<i64>,
    pub paused: bool,
    pub info: VersionInfo,
}

/// What register, verify and reset answer: the runner's id (not in a reset answer), token and expiry.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
pub struct RunnerToken {
    #[serde(default)]
    pub id: i64,
    #[serde(default)]
    pub token: String,
    /// ISO 8601, absent or null when the token does not expire.
    #[serde(default)]
    pub token_expires_at: Option<String>,
}

impl fmt::Debug for RunnerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunnerToken")
            .field("id", &self.id)
            .field("token", &"[REDACTED]")
            .field("token_expires_at", &self.token_expires_at)
            .finish()
    }
}

#[derive(Serialize)]
struct TokenBody<'a> {
    token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<&'a VersionInfo>,
}

impl Client {
    /// `POST /api/v4/runners` with a registration token; `201` only.
    pub async fn register_runner(&self, req: &RegisterRequest) -> Result<RunnerToken, ApiError> {
        let prepared = self.prepare_json(Method::POST, "runners", Some(&req.token), req)?;
        self.expect_json(&prepared, 201).await
    }

    /// `POST /api/v4/runners/verify`; `200`. An old GitLab answers plain text: then the token is valid and
    /// nothing else is known (runner network/gitlab.go `VerifyRunner`).
    pub async fn verify_runner(
        &self,
        token: &str,
        system_id: &str,
        info: &VersionInfo,
    ) -> Result<RunnerToken, ApiError> {
        let body = TokenBody {
            token,
            system_id: Some(system_id),
            info: Some(info),
        };
        let prepared = self.prepare_json(Method::POST, "runners/verify", Some(token), &body)?;
        let answer = self.send(&prepared).await?;
        if answer.status.as_u16() != 200 {
            return Err(api_error(&prepared, &answer));
        }
        Ok(
            serde_json::from_slice(&answer.body).unwrap_or_else(|_| RunnerToken {
                token: token.to_owned(),
                ..Default::default()
            }),
        )
    }

    /// `DELETE /api/v4/runners`: removes the whole runner from GitLab; `204`.
    pub async fn unregister_runner(&self, token: &str) -> Result<(), ApiError> {
        let body = TokenBody {
            token,
            system_id: None,
            info: None,
        };
        let prepared = self.prepare_json(Method::DELETE, "runners", Some(token), &body)?;
        self.expect_empty(&prepared, 204).await
    }

    /// `DELETE /api/v4/runners/managers`: removes only this host's runner manager (`glrt-` tokens); `204`.
    pub async fn unregister_runner_manager(
        &self,
        token: &str,
        system_id: &str,
    ) -> Result<(), ApiError> {
        let body = TokenBody {
            token,
            system_id: Some(system_id),
            info: None,
        };
        let prepared = self.prepare_json(Method::DELETE, "runners/managers", Some(token), &body)?;
        self.expect_empty(&prepared, 204).await
    }

    /// `POST /api/v4/runners/reset_authentication_token` with the current token; `201`.
    pub async fn reset_runner_token(&self, token: &str) -> Result<RunnerToken, ApiError> {
        let body = TokenBody {
            token,
            system_id: None,
            info: None,
        };
        let prepared = self.prepare_json(
            Method::POST,
            "runners/reset_authentication_token",
            Some(token),
            &body,
        )?;
        self.expect_json(&prepared, 201).await
    }

    /// `POST /api/v4/runners/:id/reset_authentication_token` with `PRIVATE-TOKEN`; `201`.
    pub async fn reset_runner_token_with_pat(
        &self,
        id: i64,
        pat: &str,
    ) -> Result<RunnerToken, ApiError> {
        let prepared = self.prepare_pat(
            Method::POST,
            &format!("runners/{id}/reset_authentication_token"),
            pat,
        )?;
        self.expect_json(&prepared, 201).await
    }

    /// `GET /api/v4/runners/:id` with `PRIVATE-TOKEN` (GitLab's REST API; needs an admin token or one with
    /// access to the runner): the runner as GitLab describes it (`paused`, `status`, `contacted_at`, …).
    pub async fn get_runner_details(
        &self,
        id: i64,
        pat: &str,
    ) -> Result<serde_json::Value, ApiError> {
        let prepared = self.prepare_pat(Method::GET, &format!("runners/{id}"), pat)?;
        self.expect_json(&prepared, 200).await
    }

    fn prepare_json<T: Serialize>(
        &self,
        method: Method,
        path: &str,
        runner_token: Option<&str>,
        body: &T,
    ) -> Result<Prepared, ApiError> {
        let url = self.endpoint(path).map_err(transport)?;
        let mut headers = HeaderMap::new();
        if let Some(token) = runner_token.filter(|t| !t.is_empty()) {
            insert_secret_header(&mut headers, HEADER_RUNNER_TOKEN, token).map_err(transport)?;
        }
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        json_request(method, url, headers, body).map_err(transport)
    }

    fn prepare_pat(&self, method: Method, path: &str, pat: &str) -> Result<Prepared, ApiError> {
        let url = self.endpoint(path).map_err(transport)?;
        let mut headers = HeaderMap::new();
        let mut value = HeaderValue::from_str(pat).map_err(|_| {
            transport("the access token contains characters not allowed in a header".into())
        })?;
        value.set_sensitive(true);
        headers.insert(HeaderName::from_static("private-token"), value);
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        Ok(Prepared {
            method,
            url,
            headers,
            body: None,
            body_limit: crate::client::BodyLimit::Refuse(crate::client::MAX_ANSWER_BODY),
        })
    }

    async fn send(&self, prepared: &Prepared) -> Result<crate::client::Answer, ApiError> {
        self.execute(prepared).await.map_err(transport)
    }

    async fn expect_json<T: serde::de::DeserializeOwned>(
        &self,
        prepared: &Prepared,
        status: u16,
    ) -> Result<T, ApiError> {
        let answer = self.send(prepared).await?;
        if answer.status.as_u16() != status {
            return Err(api_error(prepared, &answer));
        }
        serde_json::from_slice(&answer.body).map_err(|e| ApiError {
            status: Some(status),
            message: format!(
                "{} {}: unreadable answer: {}",
                prepared.method,
                runwright_api::redact::url(&prepared.url),
                runwright_api::redact::serde_message(&e.to_string())
            ),
        })
    }

    async fn expect_empty(&self, prepared: &Prepared, status: u16) -> Result<(), ApiError> {
        let answer = self.send(prepared).await?;
        if answer.status.as_u16() != status {
            return Err(api_error(prepared, &answer));
        }
        Ok(())
    }
}

fn transport(message: String) -> ApiError {
    ApiError {
        status: None,
        message,
    }
}

fn api_error(prepared: &Prepared, answer: &crate::client::Answer) -> ApiError {
    ApiError {
        status: Some(answer.status.as_u16()),
        message: status_text(prepared, answer),
    }
}
