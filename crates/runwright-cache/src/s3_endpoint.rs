//! Where the S3 cache's requests go, decided as GitLab's runner decides it: the endpoint of `ServerAddress`
//! (runner cache/cacheconfig `GetEndpoint`), path or virtual-host style (`PathStyleEnabled`, which asks
//! minio-go's `s3utils.IsVirtualHostSupported` when `PathStyle` is unset), and for AWS itself the host the AWS
//! SDK for Go v2 derives from the region, `DualStack` (on by default) and `Accelerate` (runner cache/s3v2/s3.go
//! `newRawS3Client`: both apply only without a custom endpoint). The same addressing gives the
//! `GetBucketLocation` request of region detection (`detectBucketLocation`).

use std::sync::LazyLock;

use regex::Regex;
use runwright_config::CacheS3Config;
use url::Url;

/// The AWS endpoint GitLab's runner treats as "no custom endpoint" (runner cache/s3v2/s3.go
/// `DEFAULT_AWS_S3_ENDPOINT`).
const DEFAULT_AWS_S3_HOST: &str = "s3.amazonaws.com";

/// Where object_store sends requests for one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Addressing {
    /// object_store's endpoint: the bucket's own host for virtual-host style, the server for path style.
    pub endpoint: String,
    /// Virtual-host style (`https://<bucket>.<host>/<key>`), else path style (`https://<host>/<bucket>/<key>`).
    pub virtual_hosted: bool,
}

/// `ServerAddress` as an endpoint URL (runner cacheconfig `GetEndpoint`): `https://`, or `http://` with
/// `Insecure`; canonical ports dropped. A scheme written into `ServerAddress` is kept (GitLab's runner would
/// produce `https://http://…`; runwright has always accepted it).
pub(crate) fn custom_endpoint(s3: &CacheS3Config) -> Option<Url> {
    let server = s3
        .server_address
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())?;
    let (scheme, host) = match server.split_once("://") {
        Some((scheme, host)) => (scheme, host),
        None => (if s3.insecure { "http" } else { "https" }, server),
    };
    // `url` drops the scheme's default port, as GetEndpoint does.
    Url::parse(&format!("{scheme}://{}", host.trim_end_matches('/'))).ok()
}

/// Go's `URL.Host`: the host and a non-default port.
fn go_host(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => String::new(),
    }
}

/// Whether the custom endpoint is AWS's default one, which GitLab's runner treats as no endpoint at all.
fn is_default_aws(url: &Url) -> bool {
    url.scheme() == "https" && go_host(url) == DEFAULT_AWS_S3_HOST
}

/// `PathStyle`, or when unset path style unless the endpoint is known to serve virtual hosts (AWS, Google,
/// Aliyun); without `ServerAddress`, virtual hosts (runner cacheconfig `PathStyleEnabled`).
pub(crate) fn path_style(s3: &CacheS3Config, bucket: &str) -> bool {
    if let Some(explicit) = s3.path_style {
        return explicit;
    }
    match custom_endpoint(s3) {
        None => false,
        Some(url) => !virtual_host_supported(&url, bucket),
    }
}

/// minio-go s3utils `IsVirtualHostSupported`.
fn virtual_host_supported(url: &Url, bucket: &str) -> bool {
    // A dot in the bucket breaks the wildcard TLS certificate of the virtual host.
    if url.scheme() == "https" && bucket.contains('.') {
        return false;
    }
    let host = go_host(url);
    is_amazon_endpoint(&host) || host == "storage.googleapis.com" || host.ends_with("aliyuncs.com")
}

/// minio-go s3utils `IsAmazonEndpoint`.
fn is_amazon_endpoint(host: &str) -> bool {
    host == "s3-external-1.amazonaws.com"
        || host == DEFAULT_AWS_S3_HOST
        || !region_from_host(host).is_empty()
}

/// minio-go s3utils's host patterns, as written there (an unescaped `.` matches any character in Go too).
static AMAZON_HOSTS: LazyLock<[Regex; 8]> = LazyLock::new(|| {
    [
        r"^s3.dualstack.(.*?).amazonaws.com$",
        r"^s3-fips.dualstack.(.*?).amazonaws.com$",
        r"^s3-fips.(.*?).amazonaws.com$",
        r"^s3-(.*?).amazonaws.com$",
        r"^s3.(cn.*?).amazonaws.com.cn$",
        r"^s3.dualstack.(cn.*?).amazonaws.com.cn$",
        r"^s3.(.*?).amazonaws.com$",
        r"^(?:bucket|accesspoint).vpce-.*?.s3.(.*?).vpce.amazonaws.com$",
    ]
    .map(|p| Regex::new(p).unwrap_or_else(|e| unreachable!("constant pattern {p}: {e}")))
});

static ELB_HOSTS: LazyLock<[Regex; 2]> = LazyLock::new(|| {
    [r"elb(.*?).amazonaws.com$", r"elb(.*?).amazonaws.com.cn$"]
        .map(|p| Regex::new(p).unwrap_or_else(|e| unreachable!("constant pattern {p}: {e}")))
});

/// minio-go s3utils `GetRegionFromURL`: the region an AWS host names, "" for other hosts.
fn region_from_host(host: &str) -> String {
    if host == "s3-external-1.amazonaws.com" {
        return String::new();
    }
    // GovCloud (`IsAmazonGovCloudEndpoint`).
    if host == "s3-fips.us-gov-east-1.amazonaws.com" {
        return "us-gov-east-1".to_owned();
    }
    if matches!(
        host,
        "s3-us-gov-west-1.amazonaws.com"
            | "s3-fips-us-gov-west-1.amazonaws.com"
            | "s3-fips.us-gov-west-1.amazonaws.com"
            | "s3-fips.dualstack.us-gov-west-1.amazonaws.com"
    ) {
        return "us-gov-west-1".to_owned();
    }
    if ELB_HOSTS.iter().any(|r| r.is_match(host)) {
        return String::new();
    }
    let [dualstack, fips_dualstack, fips, hyphen, china, china_dualstack, dot, private_link] =
        &*AMAZON_HOSTS;
    let capture = |r: &Regex| {
        r.captures(host)
            .and_then(|c| c.get(1))
            .map(|m| m.as_str().to_owned())
    };
    if let Some(r) = capture(dualstack) {
        return r;
    }
    // `IsAmazonFIPSUSEastWestEndpoint`: only these FIPS hosts are read through the FIPS patterns.
    let fips_us = matches!(
        host,
        "s3-fips.us-east-2.amazonaws.com"
            | "s3-fips.dualstack.us-west-1.amazonaws.com"
            | "s3-fips.dualstack.us-west-2.amazonaws.com"
            | "s3-fips.dualstack.us-east-2.amazonaws.com"
            | "s3-fips.dualstack.us-east-1.amazonaws.com"
            | "s3-fips.us-west-1.amazonaws.com"
            | "s3-fips.us-west-2.amazonaws.com"
            | "s3-fips.us-east-1.amazonaws.com"
    );
    if fips_us {
        if let Some(r) = capture(fips_dualstack).or_else(|| capture(fips)) {
            return r;
        }
    }
    [hyphen, china, china_dualstack, dot, private_link]
        .into_iter()
        .find_map(capture)
        .unwrap_or_default()
}

/// The AWS SDK's `isVirtualHostableS3Bucket(bucket, false)`: a DNS label of 3 to 63 lowercase letters, digits
/// and hyphens, not shaped like an IP address. Other buckets are addressed path style.
fn dns_label_bucket(bucket: &str) -> bool {
    let b = bucket.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// The addressing of presigned URLs, listing and deleting for `bucket` in `region` (runner cache/s3v2/s3.go
/// `newRawS3Client`).
pub(crate) fn addressing(
    s3: &CacheS3Config,
    bucket: &str,
    region: &str,
) -> Result<Addressing, String> {
    let path = path_style(s3, bucket);
    match custom_endpoint(s3) {
        Some(url) if !is_default_aws(&url) => Ok(custom_addressing(&url, bucket, path)),
        // AWS itself: DualStack and Accelerate apply.
        _ => aws_addressing(
            bucket,
            region,
            s3.dual_stack.unwrap_or(true),
            s3.accelerate,
            path,
        ),
    }
}

fn custom_addressing(url: &Url, bucket: &str, path: bool) -> Addressing {
    let host = go_host(url);
    if path {
        Addressing {
            endpoint: format!("{}://{host}", url.scheme()),
            virtual_hosted: false,
        }
    } else {
        Addressing {
            endpoint: format!("{}://{bucket}.{host}", url.scheme()),
            virtual_hosted: true,
        }
    }
}

/// AWS's S3 hosts as the AWS SDK for Go v2 builds them (its S3 endpoint rules: regional endpoints, including
/// `s3.us-east-1.amazonaws.com`; `s3.dualstack.<region>`; `s3-accelerate[.dualstack].amazonaws.com`;
/// `amazonaws.com.cn` in the China regions).
fn aws_addressing(
    bucket: &str,
    region: &str,
    dual_stack: bool,
    accelerate: bool,
    path: bool,
) -> Result<Addressing, String> {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    let virtual_ok = dns_label_bucket(bucket);
    if accelerate {
        // The SDK refuses these combinations, so GitLab's runner gets no presigned URL at all.
        if path {
            return Err(
                "Accelerate cannot be used with path-style addressing (PathStyle = true)"
                    .to_owned(),
            );
        }
        if !virtual_ok {
            return Err(format!(
                "Accelerate needs a bucket name that is a DNS label; {bucket:?} is not"
            ));
        }
        if suffix != "amazonaws.com" {
            return Err(format!(
                "S3 Transfer Acceleration is not available in {region}"
            ));
        }
        let host = if dual_stack {
            "s3-accelerate.dualstack.amazonaws.com"
        } else {
            "s3-accelerate.amazonaws.com"
        };
        return Ok(Addressing {
            endpoint: format!("https://{bucket}.{host}"),
            virtual_hosted: true,
        });
    }
    let host = if dual_stack {
        format!("s3.dualstack.{region}.{suffix}")
    } else {
        format!("s3.{region}.{suffix}")
    };
    Ok(if !path && virtual_ok {
        Addressing {
            endpoint: format!("https://{bucket}.{host}"),
            virtual_hosted: true,
        }
    } else {
        Addressing {
            endpoint: format!("https://{host}"),
            virtual_hosted: false,
        }
    })
}

/// The `GetBucketLocation` request of region detection (runner cache/s3v2/s3.go `detectBucketLocation`: the
/// custom endpoint, or AWS in `us-east-1` without DualStack or Accelerate; path style as configured).
pub(crate) fn location_url(
    s3: &CacheS3Config,
    bucket: &str,
    region: &str,
) -> Result<String, String> {
    let path = path_style(s3, bucket);
    let a = match custom_endpoint(s3) {
        Some(url) if !is_default_aws(&url) => custom_addressing(&url, bucket, path),
        _ => aws_addressing(bucket, region, false, false, path)?,
    };
    Ok(if a.virtual_hosted {
        format!("{}/?location", a.endpoint)
    } else {
        format!("{}/{bucket}?location", a.endpoint)
    })
}

/// The region in a `GetBucketLocation` answer: empty is `us-east-1`, the legacy `EU` is `eu-west-1` (runner
/// cache/s3v2/s3.go `detectBucketLocation`).
pub(crate) fn parse_location(body: &str, fallback: &str) -> Option<String> {
    let start = body.find("<LocationConstraint")?;
    let rest = &body[start..];
    let open_end = rest.find('>')?;
    if rest[..open_end].ends_with('/') {
        return Some(fallback.to_owned());
    }
    let value = &rest[open_end + 1..];
    let value = value[..value.find("</LocationConstraint>")?].trim();
    Some(match value {
        "" => fallback.to_owned(),
        "EU" => "eu-west-1".to_owned(),
        v => v.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(server: Option<&str>) -> CacheS3Config {
        CacheS3Config {
            server_address: server.map(str::to_owned),
            ..CacheS3Config::default()
        }
    }

    fn addr(c: &CacheS3Config, bucket: &str, region: &str) -> (String, bool) {
        let a = addressing(c, bucket, region).unwrap_or_else(|e| panic!("{e}"));
        (a.endpoint, a.virtual_hosted)
    }

    #[test]
    fn get_endpoint_as_gitlab_builds_it() {
        assert_eq!(custom_endpoint(&s3(None)), None);
        let e = |c: CacheS3Config| custom_endpoint(&c).map(|u| u.to_string());
        assert_eq!(
            e(s3(Some("minio:9000"))).as_deref(),
            Some("https://minio:9000/")
        );
        assert_eq!(e(s3(Some("minio:443"))).as_deref(), Some("https://minio/"));
        let mut insecure = s3(Some("minio:80"));
        insecure.insecure = true;
        assert_eq!(e(insecure).as_deref(), Some("http://minio/"));
    }

    #[test]
    fn path_style_is_detected_as_minio_go_does() {
        // An S3-compatible server: path style.
        assert!(path_style(&s3(Some("minio.example.com:9000")), "cache"));
        // AWS, Google and Aliyun hosts serve virtual hosts...
        for host in [
            "s3.amazonaws.com",
            "s3.eu-west-1.amazonaws.com",
            "s3-eu-west-1.amazonaws.com",
            "s3.dualstack.us-east-2.amazonaws.com",
            "s3.cn-north-1.amazonaws.com.cn",
            "s3-us-gov-west-1.amazonaws.com",
            "bucket.vpce-1a2b3c4d-5e6f.s3.us-east-1.vpce.amazonaws.com",
            "storage.googleapis.com",
            "oss-cn-hangzhou.aliyuncs.com",
        ] {
            assert!(!path_style(&s3(Some(host)), "cache"), "{host}");
        }
        // ... but not for a dotted bucket over TLS, nor behind a load balancer, nor on another port.
        assert!(path_style(&s3(Some("s3.amazonaws.com")), "my.cache"));
        assert!(path_style(
            &s3(Some("internal-elb-1.eu-west-1.elb.amazonaws.com")),
            "cache"
        ));
        assert!(path_style(
            &s3(Some("s3.eu-west-1.amazonaws.com:8443")),
            "cache"
        ));
        // No ServerAddress: virtual hosts; an explicit PathStyle wins.
        assert!(!path_style(&s3(None), "cache"));
        let mut explicit = s3(Some("s3.amazonaws.com"));
        explicit.path_style = Some(true);
        assert!(path_style(&explicit, "cache"));
    }

    #[test]
    fn aws_hosts_follow_the_region_dualstack_and_accelerate() {
        let mut c = s3(None);
        // DualStack is on unless set to false.
        assert_eq!(
            addr(&c, "cache", "eu-west-1"),
            (
                "https://cache.s3.dualstack.eu-west-1.amazonaws.com".into(),
                true
            )
        );
        c.dual_stack = Some(false);
        assert_eq!(
            addr(&c, "cache", "us-east-1"),
            ("https://cache.s3.us-east-1.amazonaws.com".into(), true)
        );
        assert_eq!(
            addr(&c, "cache", "cn-north-1"),
            ("https://cache.s3.cn-north-1.amazonaws.com.cn".into(), true)
        );
        c.accelerate = true;
        assert_eq!(
            addr(&c, "cache", "eu-west-1"),
            ("https://cache.s3-accelerate.amazonaws.com".into(), true)
        );
        c.dual_stack = None;
        assert_eq!(
            addr(&c, "cache", "eu-west-1"),
            (
                "https://cache.s3-accelerate.dualstack.amazonaws.com".into(),
                true
            )
        );
        // ServerAddress = s3.amazonaws.com is AWS's default: the options still apply.
        c.server_address = Some("s3.amazonaws.com".into());
        assert_eq!(
            addr(&c, "cache", "eu-west-1"),
            (
                "https://cache.s3-accelerate.dualstack.amazonaws.com".into(),
                true
            )
        );
        // A bucket that is no DNS label goes path style, which Accelerate cannot use.
        let mut c = s3(None);
        assert_eq!(
            addr(&c, "My_Cache", "eu-west-1"),
            ("https://s3.dualstack.eu-west-1.amazonaws.com".into(), false)
        );
        c.accelerate = true;
        assert!(addressing(&c, "my.cache", "eu-west-1").is_err());
        c.path_style = Some(true);
        assert!(addressing(&c, "cache", "eu-west-1").is_err());
        c.accelerate = false;
        assert!(addressing(&c, "cache", "cn-north-1").is_ok());
    }

    #[test]
    fn a_custom_endpoint_ignores_dualstack_and_accelerate() {
        let mut c = s3(Some("minio.internal:9000"));
        c.accelerate = true;
        c.dual_stack = Some(true);
        assert_eq!(
            addr(&c, "cache", "us-east-1"),
            ("https://minio.internal:9000".into(), false)
        );
        c.path_style = Some(false);
        assert_eq!(
            addr(&c, "cache", "us-east-1"),
            ("https://cache.minio.internal:9000".into(), true)
        );
    }

    #[test]
    fn location_requests_go_where_detection_sends_them() {
        let c = s3(None);
        assert_eq!(
            location_url(&c, "cache", "us-east-1").unwrap(),
            "https://cache.s3.us-east-1.amazonaws.com/?location"
        );
        let mut c = s3(Some("127.0.0.1:9000"));
        c.insecure = true;
        assert_eq!(
            location_url(&c, "cache", "us-east-1").unwrap(),
            "http://127.0.0.1:9000/cache?location"
        );
    }

    #[test]
    fn location_answers() {
        let ns = "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"";
        let parse = |b: &str| parse_location(b, "us-east-1");
        assert_eq!(
            parse(&format!("<?xml version=\"1.0\"?>\n<LocationConstraint {ns}>eu-central-1</LocationConstraint>")).as_deref(),
            Some("eu-central-1")
        );
        assert_eq!(
            parse(&format!("<LocationConstraint {ns}/>")).as_deref(),
            Some("us-east-1")
        );
        assert_eq!(
            parse("<LocationConstraint></LocationConstraint>").as_deref(),
            Some("us-east-1")
        );
        assert_eq!(
            parse("<LocationConstraint>EU</LocationConstraint>").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(parse("<Error><Code>AccessDenied</Code></Error>"), None);
    }
}
