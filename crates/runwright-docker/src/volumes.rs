//! The `volumes` setting (reference `protocol.md` §8.4, §10): `"/path"` is a runner-managed cache volume,
//! `"src:dst[:mode]"` a bind (or a named volume); and the table that maps a container path back to where it lives
//! on the runner's host, for the stages the runner performs itself.

use crate::DockerError;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSpec {
    /// A path the runner backs with a volume of its own (`<prefix>-cache-<md5>`).
    Cache { destination: String },
    /// `source:destination[:mode]`: a host path when `source` is absolute, else a named volume.
    Bind {
        source: String,
        destination: String,
        mode: Option<String>,
    },
}

impl VolumeSpec {
    pub fn parse(spec: &str) -> Result<Self, DockerError> {
        let parts: Vec<&str> = spec.split(':').collect();
        let check = |dst: &str| {
            if dst.starts_with('/') {
                Ok(())
            } else {
                Err(DockerError::VolumeNotAbsolute {
                    spec: spec.to_string(),
                    destination: dst.to_string(),
                })
            }
        };
        match parts.as_slice() {
            [dst] => {
                check(dst)?;
                Ok(Self::Cache {
                    destination: normalize(dst),
                })
            }
            [src, dst] | [src, dst, _] if !src.is_empty() => {
                check(dst)?;
                Ok(Self::Bind {
                    source: src.to_string(),
                    destination: normalize(dst),
                    mode: parts.get(2).map(|m| m.to_string()),
                })
            }
            _ => Err(DockerError::VolumeSyntax {
                spec: spec.to_string(),
            }),
        }
    }

    pub fn destination(&self) -> &str {
        match self {
            Self::Cache { destination } | Self::Bind { destination, .. } => destination,
        }
    }

    /// A bind of a host directory (not a named volume).
    pub fn host_source(&self) -> Option<&str> {
        match self {
            Self::Bind { source, .. } if source.starts_with('/') => Some(source),
            _ => None,
        }
    }
}

/// `/a/b/` and `/a//b` → `/a/b`.
pub fn normalize(path: &str) -> String {
    let mut out = PathBuf::from("/");
    for c in Path::new(path).components() {
        if let Component::Normal(n) = c {
            out.push(n);
        }
    }
    out.to_string_lossy().to_string()
}

/// Whether `dir` is `base` or below it.
pub fn is_within(dir: &str, base: &str) -> bool {
    Path::new(dir).starts_with(Path::new(base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_build_hosts_volumes() {
        let specs: Vec<_> = [
            "/cache",
            "/certs/client",
            "/var/www/dis/15-foundation:/builds/icdp-osg/mdis:rw",
        ]
        .iter()
        .map(|s| VolumeSpec::parse(s).unwrap())
        .collect();
        assert_eq!(
            specs[0],
            VolumeSpec::Cache {
                destination: "/cache".into()
            }
        );
        assert_eq!(specs[1].destination(), "/certs/client");
        assert_eq!(specs[2].host_source(), Some("/var/www/dis/15-foundation"));
        assert_eq!(specs[2].destination(), "/builds/icdp-osg/mdis");
        assert!(VolumeSpec::parse("cache").is_err());
        assert!(VolumeSpec::parse("named:/data")
            .unwrap()
            .host_source()
            .is_none());
    }

    #[test]
    fn paths_nest_and_normalize() {
        assert!(is_within("/builds/a", "/builds"));
        assert!(!is_within("/builds", "/builds/a"));
        assert_eq!(normalize("/a//b/"), "/a/b");
    }
}
