//! The runners a local run starts, as a typed value: the shell `[[runners]]` entry, and a docker one when jobs
//! use the docker executor. In this process the entries become `runwright_config::RunnerConfig`s directly; with
//! `--serve` the same value is written as the config.toml an outside `runwright run -c` loads.

use anyhow::bail;
use runwright_config::{DockerConfig, PullPolicy, RunnerConfig};
use serde::Serialize;

/// The config of a run's runners (the global keys and the `[[runners]]` entries of a config.toml).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct RunnerFile {
    /// `concurrent`: the run's concurrency.
    pub concurrent: usize,
    /// `check_interval` in seconds.
    pub check_interval: i64,
    pub runners: Vec<Entry>,
}

/// One `[[runners]]` entry; the keys are config.toml's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Entry {
    pub name: String,
    pub url: String,
    /// The run's runner token: the served file is 0600, and the token is never printed.
    pub token: String,
    pub executor: String,
    pub limit: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builds_dir: Option<String>,
    pub cache_dir: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clone_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerEntry>,
}

/// `[runners.docker]` of the docker entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct DockerEntry {
    /// The image of jobs that name none (empty: such a job fails, as GitLab's would).
    pub image: String,
    #[serde(serialize_with = "pull_policies")]
    pub pull_policy: Vec<PullPolicy>,
    pub disable_cache: bool,
    pub volumes: Vec<String>,
}

fn pull_policies<S: serde::Serializer>(p: &[PullPolicy], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(p.iter().map(|p| p.as_str()))
}

/// `--docker-pull-policy`, spelled as in config.toml.
pub(crate) fn pull_policy(name: &str) -> anyhow::Result<PullPolicy> {
    Ok(match name {
        "always" => PullPolicy::Always,
        "if-not-present" => PullPolicy::IfNotPresent,
        "never" => PullPolicy::Never,
        other => bail!("--docker-pull-policy {other:?}: expected always, if-not-present or never"),
    })
}

impl RunnerFile {
    /// The file an outside runner loads (`runwright run -c`).
    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string(self)?)
    }

    /// The entries as the service runs them: what loading [`RunnerFile::to_toml`] gives.
    pub fn runner_configs(&self) -> Vec<RunnerConfig> {
        self.runners.iter().map(Entry::runner_config).collect()
    }
}

impl Entry {
    fn runner_config(&self) -> RunnerConfig {
        RunnerConfig {
            name: self.name.clone(),
            url: self.url.clone(),
            token: self.token.clone(),
            executor: self.executor.clone(),
            limit: self.limit,
            builds_dir: self.builds_dir.clone(),
            cache_dir: Some(self.cache_dir.clone()),
            clone_url: self.clone_url.clone(),
            docker: self.docker.as_ref().map(|d| DockerConfig {
                image: Some(d.image.clone()),
                pull_policy: d.pull_policy.clone(),
                disable_cache: d.disable_cache,
                volumes: d.volumes.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn file(builds: &str, cache: &str, image: &str) -> RunnerFile {
        RunnerFile {
            concurrent: 4,
            check_interval: 1,
            runners: vec![
                Entry {
                    name: "exec".into(),
                    url: "http://127.0.0.1:5999/".into(),
                    token: "glrt-t1_0123456789abcdefghij".into(),
                    executor: "shell".into(),
                    limit: 4,
                    builds_dir: Some(builds.into()),
                    cache_dir: cache.into(),
                    clone_url: Some("file:///tmp/x/git/".into()),
                    docker: None,
                },
                Entry {
                    name: "exec-docker".into(),
                    url: "http://127.0.0.1:5999/".into(),
                    token: "glrt-t1_abcdefghij0123456789".into(),
                    executor: "docker".into(),
                    limit: 4,
                    builds_dir: None,
                    cache_dir: "/cache".into(),
                    clone_url: None,
                    docker: Some(DockerEntry {
                        image: image.into(),
                        pull_policy: vec![PullPolicy::IfNotPresent],
                        disable_cache: true,
                        volumes: vec![format!("{cache}:/cache")],
                    }),
                },
            ],
        }
    }

    #[test]
    fn the_served_file_loads_as_the_entries_run_in_process() {
        let f = file("/tmp/b", "/home/u/.cache/runwright", "");
        let text = f.to_toml().expect("toml");
        assert!(text.contains("executor = \"shell\""), "{text}");
        let loaded = runwright_config::parse(&text, Path::new("runner.toml")).expect("config");
        assert!(
            loaded.invalid_runners.is_empty(),
            "{:?}",
            loaded.invalid_runners
        );
        assert_eq!(loaded.config.concurrent, 4);
        assert_eq!(loaded.config.check_interval, 1);
        assert_eq!(loaded.config.runners, f.runner_configs());
    }

    #[test]
    fn toml_strings_round_trip() {
        // Paths and image names may hold quotes or backslashes.
        for s in ["/tmp/a b", "C:\\dir\"quoted\"", "127.0.0.1:5999/x:1"] {
            let f = file(s, s, s);
            let loaded = runwright_config::parse(&f.to_toml().expect("toml"), Path::new("r.toml"))
                .expect("config");
            let shell = &loaded.config.runners[0];
            assert_eq!(shell.builds_dir.as_deref(), Some(s));
            assert_eq!(shell.cache_dir.as_deref(), Some(s));
            let docker = loaded.config.runners[1].docker.as_ref().expect("docker");
            assert_eq!(docker.image.as_deref(), Some(s));
            assert_eq!(docker.volumes, vec![format!("{s}:/cache")]);
        }
    }

    #[test]
    fn pull_policies_are_config_spellings() {
        for p in ["always", "if-not-present", "never"] {
            assert_eq!(pull_policy(p).expect("policy").as_str(), p);
        }
        assert!(pull_policy("sometimes").is_err());
    }
}
