//! Decoding a job payload as gitlab-runner's Go decoder reads it (runner common/spec/spec.go `Job`, Go's
//! `encoding/json`): a `null` member is the field's zero value, like a missing one; the error names the JSON
//! path and never quotes a value.

use crate::redact;
use crate::types::JobResponse;

/// Decodes the JSON body of a `201` of jobs/request as gitlab-runner's Go decoder reads it: a `null` member is
/// the field's zero value, like a missing one (runner common/spec/spec.go; GitLab's Grape entities send `null`
/// for every unset attribute). The error names the JSON path that failed (`variables[1].masked`) and never
/// quotes a value (it could be a secret).
pub fn decode_job_response(body: &[u8]) -> Result<JobResponse, String> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "error decoding job payload: {}",
            redact::serde_message(&e.to_string())
        )
    })?;
    decode_job_value(value)
}

/// [`decode_job_response`] of a body already parsed as JSON.
pub fn decode_job_value(mut value: serde_json::Value) -> Result<JobResponse, String> {
    drop_null_members(&mut value);
    if !value.is_object() {
        return Err("error decoding job payload: it is not a JSON object".to_string());
    }
    let job: JobResponse = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = redact::serde_message(&e.into_inner().to_string());
        format!("error decoding job payload at `{path}`: {inner}")
    })?;
    // Go would decode these too, and fail at the first request that needs them; a job without them cannot
    // even be reported, so it is refused here with a clear reason.
    if job.id <= 0 {
        return Err("error decoding job payload: it has no job `id`".to_string());
    }
    if job.token.is_empty() {
        return Err("error decoding job payload: it has no job `token`".to_string());
    }
    Ok(job)
}

/// Removes every object member whose value is `null`, at any depth. With every field of the wire types
/// defaulted, that is Go's rule: `null` leaves the zero value. `null` items of lists stay (the types take them
/// as the item's zero value).
fn drop_null_members(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_null_members);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_null_members),
        _ => {}
    }
}
