//! The job payload (runwright-api's `JobResponse`): the JSON body of a `201` of `POST /jobs/request`.
use runwright_api::decode_job_response;
use runwright_api::types::JobResponse;

use crate::distinctive;

/// Decodes the input as a job payload, as the client does. Properties: no panic; a decoded payload encodes and
/// decodes again to the same encoding; neither the decode error nor the payload's `Debug` output shows the job
/// token, a dependency token, a registry password or a masked variable's value.
pub fn job_payload(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let secrets = string_values(data)
        .into_iter()
        .filter(|s| distinctive(s, &text))
        .collect::<Vec<_>>();
    match decode_job_response(data) {
        Ok(job) => {
            let once = match serde_json::to_vec(&job) {
                Ok(v) => v,
                Err(e) => panic!("a decoded payload does not encode: {e}"),
            };
            let again: JobResponse = match decode_job_response(&once) {
                Ok(j) => j,
                Err(e) => panic!("an encoded payload does not decode: {e}"),
            };
            let twice = serde_json::to_vec(&again).unwrap_or_default();
            assert_eq!(
                String::from_utf8_lossy(&once),
                String::from_utf8_lossy(&twice),
                "encoding is not stable"
            );
            let shown = format!("{job:?}");
            let hidden = std::iter::once(job.token.as_str())
                .chain(job.dependencies.iter().map(|d| d.token.as_str()))
                .chain(job.credentials.iter().map(|c| c.password.as_str()))
                .chain(
                    job.variables
                        .iter()
                        .filter(|v| v.masked || !v.public)
                        .map(|v| v.value.as_str()),
                );
            for secret in hidden {
                if secrets.iter().any(|s| s == secret) {
                    assert!(!shown.contains(secret), "secret in Debug output: {shown}");
                }
            }
        }
        Err(e) => {
            for s in &secrets {
                assert!(!e.contains(s.as_str()), "input value in decode error: {e}");
            }
        }
    }
}

/// Every string value (not key) of the input, when it is JSON at all.
fn string_values(data: &[u8]) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) => out.push(s.clone()),
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            serde_json::Value::Object(o) => o.values().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        walk(&v, &mut out);
    }
    out
}
