//! `[runners.docker] gpus` / `service_gpus`: Docker's `--gpus` syntax, read as GitLab's runner reads it
//! (runner executors/docker/docker.go `bindContainerDeviceRequests` hands the string to docker/cli
//! opts/gpus.go `GpuOpts.Set`): one CSV record of `all`, a count, or `key=value` fields (`driver`, `count`,
//! `device`, `capabilities`, `options`), giving one Docker `DeviceRequest`.
//!
//! The record is CSV as Go's `encoding/csv` reads it, so `"device=0,1"` must be quoted inside the TOML
//! string (`gpus = '"device=0,1"'`), exactly as with `docker run --gpus '"device=0,1"'`; unquoted,
//! `device=0,1` is the two fields `device=0` and `1`.

use std::collections::BTreeMap;

/// One Docker `DeviceRequest` (Engine API `HostConfig.DeviceRequests[]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuRequest {
    /// `driver=`; empty lets Docker pick (the NVIDIA runtime for `gpu`).
    pub driver: String,
    /// `-1` for `all`, else the number of devices; 0 when only device ids are given.
    pub count: i64,
    /// `device=` ids; `None` when the key is absent (Go's nil slice).
    pub device_ids: Option<Vec<String>>,
    /// `capabilities=` plus `gpu`, or `[["gpu"]]`.
    pub capabilities: Vec<Vec<String>>,
    /// `options=` as a map.
    pub options: BTreeMap<String, String>,
}

/// The device requests of a `gpus` value: none for an empty (or blank) value, else one.
pub fn parse_gpus(value: &str) -> Result<Vec<GpuRequest>, String> {
    // runner executors/docker/docker.go: a blank value requests nothing; anything else goes to the parser
    // untrimmed.
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    let fields = csv_record(value)?;
    let mut req = GpuRequest::default();
    // Every key once; a bare field counts as `count` (docker/cli opts/gpus.go `Set`).
    let mut seen: Vec<&str> = Vec::new();
    for field in &fields {
        let (key, val) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field.as_str(), None),
        };
        if seen.contains(&key) {
            return Err(format!(
                "gpu request key '{key}' can be specified only once"
            ));
        }
        seen.push(key);
        let Some(val) = val else {
            seen.push("count");
            req.count = parse_count(key)?;
            continue;
        };
        match key {
            "driver" => req.driver = val.to_owned(),
            "count" => req.count = parse_count(val)?,
            "device" => req.device_ids = Some(val.split(',').map(str::to_owned).collect()),
            "capabilities" => {
                let mut caps: Vec<String> = val.split(',').map(str::to_owned).collect();
                caps.push("gpu".to_owned());
                req.capabilities = vec![caps];
            }
            "options" => {
                let opts =
                    csv_record(val).map_err(|e| format!("failed to read gpu options: {e}"))?;
                req.options = opts
                    .iter()
                    .map(|o| match o.split_once('=') {
                        Some((k, v)) => (k.to_owned(), v.to_owned()),
                        None => (o.clone(), String::new()),
                    })
                    .collect();
            }
            _ => return Err(format!("unexpected key '{key}' in '{field}'")),
        }
    }
    if !seen.contains(&"count") && req.device_ids.is_none() {
        req.count = 1;
    }
    if req.capabilities.is_empty() {
        req.capabilities = vec![vec!["gpu".to_owned()]];
    }
    Ok(vec![req])
}

/// docker/cli opts/gpus.go `parseCount`: `all` is -1, else a decimal integer.
fn parse_count(s: &str) -> Result<i64, String> {
    if s == "all" {
        return Ok(-1);
    }
    s.parse::<i64>()
        .map_err(|_| format!("invalid count ({s}): value must be either \"all\" or an integer"))
}

/// The first record of `text` as Go's `encoding/csv` `Reader.Read` returns it with the default settings
/// (comma `,`, no lazy quotes, leading spaces kept, empty lines skipped). Hand-written because the `csv`
/// crate is lenient where Go is not (a bare `"` in an unquoted field is an error in Go), and the error
/// decides whether a runner entry is used.
fn csv_record(text: &str) -> Result<Vec<String>, String> {
    // Empty lines before the record are skipped; a record never starts on one.
    let mut rest = text;
    loop {
        match rest.split_once('\n') {
            Some((line, after)) if line.trim_end_matches('\r').is_empty() => rest = after,
            _ => break,
        }
    }
    if rest.trim_end_matches(['\r', '\n']).is_empty() {
        return Err("no value (EOF)".to_owned());
    }
    let mut fields = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            // A quoted field: `""` is a quote, a newline is kept, the closing quote must be followed by a
            // comma or the end of the line.
            loop {
                match chars.next() {
                    None => return Err("extraneous or missing \" in quoted-field".to_owned()),
                    Some('"') => match chars.peek() {
                        Some('"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some(',') | None | Some('\n') => break,
                        Some('\r') => break,
                        Some(_) => {
                            return Err("extraneous or missing \" in quoted-field".to_owned())
                        }
                    },
                    Some('\r') if chars.peek() == Some(&'\n') => {}
                    Some(c) => field.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c == '\n' {
                    break;
                }
                if c == '"' {
                    return Err("bare \" in non-quoted-field".to_owned());
                }
                field.push(c);
                chars.next();
            }
            // `\r\n` ends a line like `\n`.
            if field.ends_with('\r') && matches!(chars.peek(), Some('\n') | None) {
                field.pop();
            }
        }
        fields.push(field);
        match chars.next() {
            Some(',') => continue,
            Some('\r') => {
                // After a quoted field: `\r\n` or a lone `\r` at the end.
                if matches!(chars.peek(), Some('\n') | None) {
                    break;
                }
                return Err("extraneous or missing \" in quoted-field".to_owned());
            }
            _ => break,
        }
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(value: &str) -> GpuRequest {
        let mut v = parse_gpus(value).unwrap_or_else(|e| panic!("{value:?}: {e}"));
        assert_eq!(v.len(), 1, "{value:?}");
        v.remove(0)
    }

    fn gpu() -> Vec<Vec<String>> {
        vec![vec!["gpu".to_owned()]]
    }

    #[test]
    fn all_a_count_and_nothing() {
        assert_eq!(parse_gpus("").unwrap(), vec![]);
        assert_eq!(parse_gpus("  ").unwrap(), vec![]);
        assert_eq!(
            one("all"),
            GpuRequest {
                count: -1,
                capabilities: gpu(),
                ..GpuRequest::default()
            }
        );
        assert_eq!(one("2").count, 2);
        assert_eq!(one("count=all").count, -1);
        assert_eq!(
            one("driver=nvidia").count,
            1,
            "no count and no device: one GPU"
        );
    }

    #[test]
    fn devices_must_be_quoted_as_with_docker_run() {
        let r = one("\"device=0,1\"");
        assert_eq!(r.device_ids, Some(vec!["0".to_owned(), "1".to_owned()]));
        assert_eq!(r.count, 0, "device ids alone set no count");
        assert_eq!(r.capabilities, gpu());
        // Unquoted, the CSV record is `device=0` and `1`: one device and a count of one.
        let r = one("device=0,1");
        assert_eq!(r.device_ids, Some(vec!["0".to_owned()]));
        assert_eq!(r.count, 1);
        let r = one("device=GPU-3a23c669-1f69-c64e-cf85-44e9b07e7a2a");
        assert_eq!(
            r.device_ids,
            Some(vec!["GPU-3a23c669-1f69-c64e-cf85-44e9b07e7a2a".to_owned()])
        );
    }

    #[test]
    fn capabilities_driver_and_options() {
        let r = one("driver=nvidia,\"capabilities=compute,utility\",count=2,\"options=a=1,b\"");
        assert_eq!(r.driver, "nvidia");
        assert_eq!(r.count, 2);
        assert_eq!(
            r.capabilities,
            vec![vec![
                "compute".to_owned(),
                "utility".to_owned(),
                "gpu".to_owned()
            ]]
        );
        let expected: BTreeMap<String, String> = [("a", "1"), ("b", "")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(r.options, expected);
    }

    #[test]
    fn mistakes_are_refused_as_docker_refuses_them() {
        for (value, needle) in [
            ("two", "invalid count (two)"),
            (" all", "invalid count ( all)"),
            ("all,count=1", "'count' can be specified only once"),
            ("driver=a,driver=b", "'driver' can be specified only once"),
            ("colour=red", "unexpected key 'colour'"),
            ("dev\"ice=0", "bare \""),
            ("\"device=0", "extraneous or missing"),
            ("\"device=0\"x", "extraneous or missing"),
        ] {
            let err = parse_gpus(value).unwrap_err();
            assert!(err.contains(needle), "{value:?}: {err}");
        }
    }

    #[test]
    fn csv_as_go_reads_it() {
        assert_eq!(csv_record("a,b").unwrap(), ["a", "b"]);
        assert_eq!(csv_record("\"a,b\",c").unwrap(), ["a,b", "c"]);
        assert_eq!(csv_record("\"a\"\"b\"").unwrap(), ["a\"b"]);
        assert_eq!(csv_record("a,").unwrap(), ["a", ""]);
        assert_eq!(
            csv_record("\n\na,b\nc").unwrap(),
            ["a", "b"],
            "first record only"
        );
        assert_eq!(csv_record("a\r\n").unwrap(), ["a"]);
        assert_eq!(csv_record(" a").unwrap(), [" a"], "leading space kept");
    }
}
