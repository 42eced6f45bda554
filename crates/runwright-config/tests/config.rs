//! Integration tests of runwright-config: the team's real files, broken files with their exact
//! messages, short tokens and the system id file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use runwright_config::{
    load, load_or_create_system_id, parse, short_token, system_id_path, CacheType, ConfigError,
    LoadedConfig, PullPolicy,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Parses `text` as if it were a file named `config.toml`.
fn parse_str(text: &str) -> Result<LoadedConfig, ConfigError> {
    parse(text, Path::new("config.toml"))
}

/// The error message `text` must fail with.
fn error(text: &str) -> String {
    match parse_str(text) {
        Ok(loaded) => panic!("expected an error, got {:#?}", loaded.config),
        Err(e) => e.to_string(),
    }
}

/// The one `[[runners]]` entry of `text` that must fail: its message. The file itself loads, and
/// the entry is left out of the runners (one bad entry stops only that runner).
fn entry_error(text: &str) -> String {
    match parse_str(text) {
        Err(e) => panic!("expected the file to load with one invalid entry, got: {e}"),
        Ok(loaded) => {
            assert_eq!(
                loaded.invalid_runners.len(),
                1,
                "{:#?}",
                loaded.invalid_runners
            );
            let bad = &loaded.invalid_runners[0];
            assert!(
                loaded.config.runners.len() + 1 == text.matches("[[runners]]").count(),
                "the invalid entry is left out: {:#?}",
                loaded.config.runners
            );
            bad.error.clone()
        }
    }
}

/// The warnings of a file that must load.
fn warnings(text: &str) -> Vec<String> {
    match parse_str(text) {
        Ok(loaded) => loaded.warnings.iter().map(ToString::to_string).collect(),
        Err(e) => panic!("expected success, got: {e}"),
    }
}

const HEAD: &str = r#"[[runners]]
  name = "r"
  url = "https://gitlab.example.com/"
  token = "glrt-t1_SECRETSECRETSECRET"
  executor = "docker"
"#;

// ---------------------------------------------------------------------------------------------
// The team's files

#[test]
fn team_config_toml_loads_unchanged_without_warnings() {
    let loaded = load(&fixture("config.toml")).unwrap();
    assert_eq!(loaded.warnings, vec![]);
    let c = &loaded.config;
    // No `concurrent` key: GitLab's default of 1.
    assert_eq!(c.concurrent, 1);
    assert_eq!(c.check_interval(), Duration::from_secs(3));
    assert_eq!(c.runners.len(), 1);

    let r = &c.runners[0];
    assert_eq!(r.name, "wb31-mdis-docker");
    assert_eq!(r.url, "https://git.gfz.de/");
    assert_eq!(r.id, 1168);
    assert_eq!(r.executor, "docker");
    assert_eq!(
        r.token_obtained_at,
        Some(time::macros::datetime!(2023-03-06 18:09:02 UTC))
    );
    // 0001-01-01T00:00:00Z is Go's zero time: never expires.
    assert_eq!(r.token_expires_at, None);
    assert_eq!(r.short_token(), "xyz123xxx");

    let d = r.docker.as_ref().unwrap();
    assert!(!d.tls_verify);
    assert_eq!(d.image.as_deref(), Some("docker:24"));
    assert!(d.privileged);
    assert!(!d.disable_entrypoint_overwrite);
    assert!(!d.oom_kill_disable);
    assert!(!d.disable_cache);
    assert_eq!(
        d.volumes,
        vec![
            "/cache",
            "/certs/client",
            "/var/www/dis/15-foundation:/builds/icdp-osg/mdis:rw"
        ]
    );
    assert_eq!(d.pull_policy, vec![PullPolicy::IfNotPresent]);
    assert_eq!(d.shm_size, 0);
}

#[test]
fn build_host_toml_loads_unchanged_without_warnings() {
    let loaded = load(&fixture("build-host.toml")).unwrap();
    assert_eq!(loaded.warnings, vec![]);
    let c = &loaded.config;
    assert_eq!(c.concurrent, 4);
    assert_eq!(c.check_interval, 3);
    assert_eq!(c.log_level.as_deref(), Some("info"));
    assert_eq!(c.listen_address.as_deref(), Some("127.0.0.1:9252"));
    assert_eq!(c.runners.len(), 7);

    let names: Vec<&str> = c.runners.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "wb31-gfz-gitlab-knb",
            "wb31-mdis-vanilla-volume",
            "wb31-mdis-docs-project-runner",
            "wb31-mdis-docker",
            "wb31-projrunner-shellexec",
            "wb31-helmholtz-cloud--icdp-osg-grouprunner",
            "wb31-mdis-blank-volume",
        ]
    );
    let executors: Vec<&str> = c.runners.iter().map(|r| r.executor.as_str()).collect();
    assert_eq!(
        executors,
        ["docker", "docker", "docker", "docker", "shell", "docker", "docker"]
    );

    // The shell runner.
    let shell = &c.runners[4];
    assert_eq!(shell.shell.as_deref(), Some("bash"));
    assert!(shell.docker.is_none());
    assert_eq!(shell.short_token(), "AsX-3Txxx");

    // No `id`: 0, as GitLab leaves it.
    assert_eq!(c.runners[5].id, 0);
    assert_eq!(c.runners[5].url, "https://codebase.helmholtz.cloud/");
    // URL without trailing slash is kept as written.
    assert_eq!(c.runners[6].url, "https://git.gfz.de");
    assert_eq!(c.runners[6].short_token(), "Gxxxxxxxx");
    assert!(c.runners[6].is_created_runner_token());

    // Docker volumes and pull policies of every docker runner.
    let volumes: Vec<Vec<&str>> = c
        .runners
        .iter()
        .filter_map(|r| r.docker.as_ref())
        .map(|d| d.volumes.iter().map(String::as_str).collect())
        .collect();
    assert_eq!(
        volumes,
        vec![
            vec!["/cache"],
            vec![
                "/cache",
                "/certs/client",
                "/var/www/dis/vanilla:/builds/icdp-osg/mdis:rw"
            ],
            vec![],
            vec![
                "/cache",
                "/certs/client",
                "/var/www/dis/15-foundation:/builds/icdp-osg/mdis:rw"
            ],
            vec![],
            vec!["/cache", "/certs/client"],
        ]
    );
    for d in c.runners.iter().filter_map(|r| r.docker.as_ref()) {
        assert_eq!(d.pull_policy, vec![PullPolicy::IfNotPresent]);
        assert_eq!(d.pull_policies(), vec![PullPolicy::IfNotPresent]);
    }
    let privileged: Vec<bool> = c
        .runners
        .iter()
        .filter_map(|r| r.docker.as_ref())
        .map(|d| d.privileged)
        .collect();
    assert_eq!(privileged, [false, true, false, true, false, true]);

    // Defaults of every entry.
    for r in &c.runners {
        assert_eq!(r.limit, 0);
        assert_eq!(r.output_limit_bytes(), 4096 * 1024);
        assert_eq!(r.request_concurrency(), 1);
        assert_eq!(r.unhealthy_requests_limit(), 3);
        assert_eq!(r.unhealthy_interval(), Duration::from_secs(3600));
        assert_eq!(r.final_update_retry_limit(), 10);
    }
}

#[test]
fn file_written_by_gitlab_register_loads_without_warnings() {
    let loaded = load(&fixture("gitlab-generated.toml")).unwrap();
    assert_eq!(loaded.warnings, vec![]);
    let c = &loaded.config;
    assert_eq!(c.concurrent, 1);
    assert_eq!(c.check_interval(), Duration::from_secs(3));
    assert_eq!(c.shutdown_timeout(), Duration::from_secs(30));
    assert_eq!(c.connection_max_age(), Duration::from_secs(900));
    assert_eq!(
        c.session_server.as_ref().unwrap().session_timeout(),
        Duration::from_secs(1800)
    );
    let docker = &c.runners[0];
    assert_eq!(docker.short_token(), "abcdefghi");
    assert_eq!(docker.cache.as_ref().unwrap().cache_type, None);
    assert_eq!(
        docker.docker.as_ref().unwrap().pull_policies(),
        vec![PullPolicy::IfNotPresent, PullPolicy::Always]
    );
    let k8s = &c.runners[1];
    assert_eq!(k8s.executor, "kubernetes");
    assert_eq!(
        k8s.kubernetes.as_ref().unwrap()["namespace"].as_str(),
        Some("gitlab")
    );
}

#[test]
fn missing_file_names_the_path_and_the_option() {
    let err = load(Path::new("/nonexistent/dir/config.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::NotFound { .. }));
    assert_eq!(
        err.to_string(),
        "/nonexistent/dir/config.toml: config file not found"
    );
    // The option is the hint, printed by the binary on a line of its own.
    assert_eq!(err.hint(), Some("give its path with -c/--config"));
}

// ---------------------------------------------------------------------------------------------
// Broken files: one test per kind of mistake, each with its exact message.

#[test]
fn syntax_error_unquoted_string() {
    assert_eq!(
        error("concurrent = 4\nlog_format = json\n"),
        "config.toml:2:14: string values must be quoted, expected literal string"
    );
}

#[test]
fn syntax_error_unclosed_header() {
    assert_eq!(
        error("[[runners]\nurl = \"x\"\n"),
        "config.toml:1:11: unclosed array table, expected `]`"
    );
}

#[test]
fn syntax_error_duplicate_key_names_the_key() {
    assert_eq!(
        error("concurrent = 1\nconcurrent = 2\n"),
        "config.toml:2:1: duplicate key `concurrent`"
    );
}

#[test]
fn wrong_type_at_top_level() {
    assert_eq!(
        error("concurrent = \"4\"\n"),
        "config.toml:1:14: concurrent: invalid type: string \"4\", expected an integer"
    );
}

#[test]
fn wrong_type_in_runner() {
    let text = format!("{HEAD}  limit = \"four\"\n");
    assert_eq!(
        entry_error(&text),
        "config.toml:6:11: runners[0].limit: invalid type: string \"four\", expected an integer"
    );
}

#[test]
fn wrong_type_in_runner_docker() {
    let text = format!("{HEAD}  [runners.docker]\n    volumes = \"/cache\"\n");
    assert_eq!(
        entry_error(&text),
        "config.toml:7:15: runners[0].docker.volumes: invalid type: string \"/cache\", expected an array"
    );
}

#[test]
fn wrong_type_in_second_runner_feature_flags() {
    let text =
        format!("{HEAD}{HEAD}  [runners.feature_flags]\n    FF_NETWORK_PER_BUILD = \"yes\"\n");
    assert_eq!(
        entry_error(&text),
        "config.toml:12:28: runners[1].feature_flags.FF_NETWORK_PER_BUILD: invalid type: string \"yes\", expected a boolean"
    );
}

#[test]
fn wrong_type_datetime_for_string() {
    let text = format!("{HEAD}  shell = 2023-01-01T00:00:00Z\n");
    assert_eq!(
        entry_error(&text),
        "config.toml:6:11: runners[0].shell: invalid type: datetime, expected a string"
    );
}

#[test]
fn wrong_type_services_must_be_array_of_tables() {
    let text = format!("{HEAD}  [runners.docker]\n    services = {{ name = \"postgres\" }}\n");
    assert_eq!(
        entry_error(&text),
        "config.toml:7:16: runners[0].docker.services: invalid type: table, expected an array"
    );
}

#[test]
fn single_brackets_for_runners() {
    let text = HEAD.replace("[[runners]]", "[runners]");
    assert_eq!(
        error(&text),
        "config.toml:1:1: runners: invalid type: table, expected an array (write [[runners]] for each runner)"
    );
}

#[test]
fn bad_executor_name() {
    let text = HEAD.replace("\"docker\"", "\"dockr\"");
    assert_eq!(
        entry_error(&text),
        "config.toml:5:14: runners[0].executor: invalid value: string \"dockr\", expected one of \
         shell, docker, docker-windows, docker+machine, docker-autoscaler, kubernetes, custom, \
         ssh, parallels, virtualbox, instance"
    );
}

#[test]
fn bad_shell_name() {
    let text = format!("{HEAD}  shell = \"zsh\"\n");
    assert_eq!(
        entry_error(&text),
        "config.toml:6:11: runners[0].shell: invalid value: string \"zsh\", expected one of bash, sh, pwsh, powershell, cmd"
    );
}

#[test]
fn bad_log_level() {
    assert_eq!(
        error("log_level = \"verbose\"\n"),
        "config.toml:1:13: log_level: invalid value: string \"verbose\", expected one of panic, \
         fatal, error, warn, warning, info, debug, trace"
    );
}

#[test]
fn bad_cache_type() {
    let text = format!("{HEAD}  [runners.cache]\n    Type = \"ftp\"\n");
    assert_eq!(
        entry_error(&text),
        "config.toml:7:12: runners[0].cache.Type: invalid value: string \"ftp\", expected one of \
         s3, gcs, azure, or \"\" for no distributed cache"
    );
}

#[test]
fn bad_duration() {
    let text = format!("{HEAD}  unhealthy_interval = \"1x\"\n");
    assert_eq!(
        entry_error(&text),
        "config.toml:6:24: runners[0].unhealthy_interval: invalid duration \"1x\": unknown unit \
         \"x\" (valid units are ns, us, ms, s, m, h)"
    );
}

#[test]
fn duration_without_unit() {
    assert_eq!(
        error("connection_max_age = \"15\"\n"),
        "config.toml:1:22: connection_max_age: invalid duration \"15\": missing unit"
    );
}

#[test]
fn bad_memory_size() {
    let text = format!("{HEAD}  [runners.docker]\n    memory = \"lots\"\n");
    assert_eq!(
        entry_error(&text),
        "config.toml:7:14: runners[0].docker.memory: invalid value: string \"lots\", expected a \
         memory size such as \"512m\" or \"2g\""
    );
}

#[test]
fn missing_url() {
    let text = HEAD.replace("  url = \"https://gitlab.example.com/\"\n", "");
    assert_eq!(
        entry_error(&text),
        "config.toml:1:1: runners[0]: missing required key 'url'"
    );
}

#[test]
fn missing_token_in_second_runner_points_at_its_header() {
    let second = HEAD.replace("  token = \"glrt-t1_SECRETSECRETSECRET\"\n", "");
    let text = format!("concurrent = 2\n\n{HEAD}\n{second}");
    assert_eq!(
        entry_error(&text),
        "config.toml:9:1: runners[1]: missing required key 'token'"
    );
}

#[test]
fn missing_executor() {
    let text = HEAD.replace("  executor = \"docker\"\n", "");
    assert_eq!(
        entry_error(&text),
        "config.toml:1:1: runners[0]: missing required key 'executor'"
    );
}

#[test]
fn empty_url() {
    let text = HEAD.replace("\"https://gitlab.example.com/\"", "\"\"");
    assert_eq!(
        entry_error(&text),
        "config.toml:3:9: runners[0].url: invalid value: string \"\", expected a non-empty string"
    );
}

#[test]
fn negative_limit() {
    let text = format!("{HEAD}  limit = -1\n");
    assert_eq!(
        entry_error(&text),
        "config.toml:6:11: runners[0].limit: invalid value: integer `-1`, expected a non-negative integer"
    );
}

#[test]
fn pull_policy_string_wrong() {
    let text = format!("{HEAD}  [runners.docker]\n    pull_policy = \"sometimes\"\n");
    assert_eq!(
        entry_error(&text),
        "config.toml:7:19: runners[0].docker.pull_policy: invalid value: string \"sometimes\", \
         expected one of always, if-not-present, never"
    );
}

#[test]
fn pull_policy_array_element_wrong_points_at_the_element() {
    let text =
        format!("{HEAD}  [runners.docker]\n    pull_policy = [\"always\", \"if-present\"]\n");
    assert_eq!(
        entry_error(&text),
        "config.toml:7:30: runners[0].docker.pull_policy[1]: invalid value: string \
         \"if-present\", expected one of always, if-not-present, never"
    );
}

#[test]
fn allowed_pull_policies_wrong() {
    let text = format!("{HEAD}  [runners.docker]\n    allowed_pull_policies = [\"Always\"]\n");
    assert_eq!(
        entry_error(&text),
        "config.toml:7:30: runners[0].docker.allowed_pull_policies[0]: invalid value: string \
         \"Always\", expected one of always, if-not-present, never"
    );
}

#[test]
fn custom_executor_without_run_exec() {
    let text = HEAD.replace("\"docker\"", "\"custom\"");
    assert_eq!(
        entry_error(&text),
        "config.toml:5:14: runners[0].executor: executor \"custom\" needs [runners.custom] run_exec"
    );
}

#[test]
fn token_datetime_as_string() {
    let text = format!("{HEAD}  token_expires_at = \"never\"\n");
    assert_eq!(
        entry_error(&text),
        "config.toml:6:22: runners[0].token_expires_at: invalid type: string \"never\", expected a TOML datetime"
    );
}

// ---------------------------------------------------------------------------------------------
// One bad [[runners]] entry stops only that runner.

#[test]
fn one_bad_entry_is_reported_and_skipped_while_the_others_load() {
    let good = HEAD.replace("name = \"r\"", "name = \"good\"");
    let bad = "[[runners]]\n  name = \"bad\"\n  url = \"https://other.example.com/\"\n  token = \"glrt-t1_BADBADBADBADBADBAD\"\n  executor = \"docker\"\n  [runners.docker]\n    memory = \"lots\"\n";
    let last = HEAD.replace("name = \"r\"", "name = \"last\"").replace(
        "  executor = \"docker\"\n",
        "  executor = \"shell\"\n  environment = [\"NOEQUALS\"]\n",
    );
    let text = format!("concurrent = 2\n{good}{bad}{last}");
    let loaded = parse_str(&text).expect("the file loads");
    let names: Vec<&str> = loaded
        .config
        .runners
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["good", "last"]);
    assert_eq!(
        loaded.invalid_runners,
        vec![runwright_config::InvalidRunner {
            index: 1,
            name: "bad".into(),
            url: "https://other.example.com/".into(),
            executor: "docker".into(),
            short_token: "BADBADBAD".into(),
            line: 7,
            error: "config.toml:13:14: runners[1].docker.memory: invalid value: string \"lots\", \
                    expected a memory size such as \"512m\" or \"2g\""
                .into(),
        }]
    );
    let shown = loaded.invalid_runners[0].to_string();
    assert!(
        shown.ends_with(
            "; runner \"bad\" (runners[1]) is skipped, the other runners are not affected"
        ),
        "{shown}"
    );
    assert!(!shown.contains("BADBADBADBADBAD"), "{shown}");
    // Warnings of the entries after it still name their own entry and line.
    assert_eq!(
        warnings(&text),
        ["config.toml:19: runners[2].environment[0]: \"NOEQUALS\" has no '=' and is ignored, as GitLab's runner does"]
    );
}

#[test]
fn every_entry_can_be_bad_and_the_file_still_loads() {
    let text = "[[runners]]\n  name = \"a\"\n  executor = \"shell\"\n[[runners]]\n  name = \"b\"\n  url = \"https://g/\"\n  token = \"\"\n  executor = \"shell\"\n";
    let loaded = parse_str(text).expect("loads");
    assert!(loaded.config.runners.is_empty());
    let errors: Vec<&str> = loaded
        .invalid_runners
        .iter()
        .map(|r| r.error.as_str())
        .collect();
    assert_eq!(
        errors,
        [
            "config.toml:1:1: runners[0]: missing required key 'url'",
            "config.toml:7:11: runners[1].token: invalid value: string \"\", expected a non-empty string",
        ]
    );
}

#[test]
fn an_entry_that_is_not_a_table_is_an_invalid_entry() {
    let loaded = parse_str("runners = [1]\n").expect("loads");
    assert_eq!(
        loaded.invalid_runners[0].error,
        "config.toml:1:12: runners[0]: invalid type: integer `1`, expected a table"
    );
}

#[test]
fn a_problem_outside_the_entries_still_rejects_the_file() {
    // Global keys concern every runner.
    let text = format!("concurrent = \"4\"\n{HEAD}");
    assert_eq!(
        error(&text),
        "config.toml:1:14: concurrent: invalid type: string \"4\", expected an integer"
    );
}

// ---------------------------------------------------------------------------------------------
// Labels (runner common/labels.go)

#[test]
fn labels_are_merged_for_each_entry() {
    let text = format!("[labels]\n  env = \"prod\"\n  team = \"ci\"\n{HEAD}  [runners.labels]\n    env = \"staging\"\n");
    let loaded = parse_str(&text).unwrap();
    let labels: Vec<(&str, &str)> = loaded.config.runners[0]
        .computed_labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(labels, [("env", "staging"), ("team", "ci")]);
}

#[test]
fn a_bad_global_label_rejects_the_file_as_gitlab_does() {
    let text = format!("[labels]\n  os = \"linux\"\n{HEAD}");
    let err = error(&text);
    assert!(
        err.starts_with("config.toml:2:3: labels: invalid label key \"os\""),
        "{err}"
    );
}

#[test]
fn a_bad_entry_label_or_too_many_labels_make_the_entry_invalid() {
    let text = format!("{HEAD}  [runners.labels]\n    gpu = \"a 100\"\n");
    let err = entry_error(&text);
    assert!(
        err.starts_with(
            "config.toml:7:5: runners[0].labels: invalid value \"a 100\" of label \"gpu\""
        ),
        "{err}"
    );

    let many: String = (0..20).map(|i| format!("  key{i} = \"v\"\n")).collect();
    let own: String = (20..33).map(|i| format!("    key{i} = \"v\"\n")).collect();
    let text = format!("[labels]\n{many}{HEAD}  [runners.labels]\n{own}");
    let err = entry_error(&text);
    assert!(
        err.contains("runners[0].labels: 33 labels with the global ones: at most 32"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// GPUs (Docker's --gpus syntax, runner executors/docker/docker.go)

#[test]
fn gpus_are_read_as_docker_requests() {
    let text = format!(
        "{HEAD}  [runners.docker]\n    gpus = \"all\"\n    service_gpus = '\"device=0,2\"'\n"
    );
    let loaded = parse_str(&text).unwrap().config;
    let d = loaded.runners[0].docker.as_ref().unwrap();
    assert_eq!(d.info_gpus(), "all");
    assert_eq!(d.gpu_requests()[0].count, -1);
    let service = d.service_gpu_requests();
    assert_eq!(
        service[0].device_ids,
        Some(vec!["0".to_owned(), "2".to_owned()])
    );
}

#[test]
fn a_bad_isolation_value_makes_the_entry_invalid() {
    let text = format!("{HEAD}  [runners.docker]\n    isolation = \"vm\"\n");
    assert_eq!(
        entry_error(&text),
        "config.toml:7:17: runners[0].docker.isolation: the isolation value \"vm\" is not valid: the valid \
         values are 'process', 'hyperv', 'default' and an empty string"
    );
    let text = format!("{HEAD}  [runners.docker]\n    isolation = \"HyperV\"\n");
    assert!(parse_str(&text).unwrap().invalid_runners.is_empty());
}

#[test]
fn a_bad_gpus_value_makes_the_entry_invalid() {
    let text = format!("{HEAD}  [runners.docker]\n    gpus = \"every\"\n");
    assert_eq!(
        entry_error(&text),
        "config.toml:7:12: runners[0].docker.gpus: parsing gpus string \"every\": invalid count (every): value \
         must be either \"all\" or an integer (Docker's --gpus syntax: \"all\", a count, or '\"device=0,1\"')"
    );
}

// ---------------------------------------------------------------------------------------------
// Keys runwright reads but does not honour say so.

#[test]
fn keys_without_effect_in_runwright_are_warned_with_the_consequence() {
    let text = format!(
        "{HEAD}  proxy_exec = true\n  use_slot_cgroups = true\n  slot_cgroup_template = \"ci/slot-${{slot}}\"\n  step_runner_image = \"registry.example.com/step-runner:1\"\n  [runners.referees]\n    [runners.referees.metrics]\n      prometheus_address = \"http://p:9090\"\n  [runners.monitoring]\n  [runners.docker]\n    service_slot_cgroup_template = \"svc/${{slot}}\"\n  [runners.cache]\n    Type = \"gcs\"\n    [runners.cache.s3]\n      UploadRoleARN = \"arn:aws:iam::1:role/u\"\n      AssumeRoleMaxConcurrency = 3\n"
    );
    let got = warnings(&text);
    let expected = [
        "config.toml:6: runners[0].proxy_exec is not supported by runwright and is ignored: stage scripts are run directly",
        "config.toml:7: runners[0].use_slot_cgroups is not supported by runwright and is ignored: slot cgroups apply only to the autoscaling executors",
        "config.toml:8: runners[0].slot_cgroup_template is not supported",
        "config.toml:9: runners[0].step_runner_image is not supported by runwright and is ignored: runwright does not run CI Steps",
        "config.toml:10: runners[0].referees is not supported by runwright and is ignored: no referee",
        "config.toml:13: runners[0].monitoring is not supported",
        "config.toml:15: runners[0].docker.service_slot_cgroup_template is not supported",
        "config.toml:17: runners[0].cache.Type is not supported by runwright and is ignored: the gcs distributed cache is not implemented, caches of this runner stay local",
        "config.toml:19: runners[0].cache.s3.UploadRoleARN is not supported by runwright and is ignored: runwright cannot assume IAM roles",
        "config.toml:20: runners[0].cache.s3.AssumeRoleMaxConcurrency is not supported",
    ];
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for (g, e) in got.iter().zip(expected) {
        assert!(g.starts_with(e), "{g}\n  should start with\n{e}");
    }
}

#[test]
fn slot_cgroups_take_effect_with_the_shell_executor_and_a_template_without_the_slot_is_warned() {
    let shell = HEAD.replace("\"docker\"", "\"shell\"");
    assert_eq!(
        warnings(&format!(
            "{shell}  use_slot_cgroups = true\n  slot_cgroup_template = \"ci/slot-${{slot}}\"\n"
        )),
        Vec::<String>::new()
    );
    // runner common/config.go `validateSlotCgroupTemplate`.
    assert_eq!(
        warnings(&format!(
            "{shell}  use_slot_cgroups = true\n  slot_cgroup_template = \"ci/shared\"\n"
        )),
        ["config.toml:7: runners[0].slot_cgroup_template: \"ci/shared\" does not contain the ${slot} placeholder: \
          all jobs use the same cgroup, defeating the purpose of slot-based isolation (e.g. \"gitlab-runner/slot-${slot}\")"]
    );
    // Without use_slot_cgroups the template is not used, and the runner does not check it.
    assert_eq!(
        warnings(&format!("{shell}  slot_cgroup_template = \"ci/shared\"\n")),
        Vec::<String>::new()
    );
}

#[test]
fn a_docker_entry_with_a_shell_runwright_does_not_run_is_warned() {
    let text = format!("{HEAD}  shell = \"pwsh\"\n");
    assert_eq!(
        warnings(&text),
        ["config.toml:6: runners[0].shell is not supported by runwright and is ignored: runwright's docker executor runs job scripts with bash, or sh where the image has no bash"]
    );
    assert_eq!(
        warnings(&format!("{HEAD}  shell = \"sh\"\n")),
        Vec::<String>::new()
    );
}

#[test]
fn defaults_gitlab_writes_itself_are_not_warned() {
    // `gitlab-runner register` writes these; they do nothing in GitLab's runner either (no session
    // server without listen_address) or are its defaults.
    let text = format!("connection_max_age = \"15m0s\"\n[session_server]\n  session_timeout = 1800\n{HEAD}  proxy_exec = false\n  use_slot_cgroups = false\n");
    assert_eq!(warnings(&text), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// Warnings: GitLab's runner would accept these; loading goes on.

#[test]
fn unknown_key_is_a_warning_with_its_line() {
    let text = format!("{HEAD}  [runners.docker]\n    image = \"alpine:3\"\n    imagee = \"x\"\n");
    let loaded = parse_str(&text).unwrap();
    assert_eq!(
        loaded.config.runners[0]
            .docker
            .as_ref()
            .unwrap()
            .image
            .as_deref(),
        Some("alpine:3")
    );
    assert_eq!(
        warnings(&text),
        ["config.toml:8: unknown key 'runners[0].docker.imagee' (ignored)"]
    );
}

/// Issue 19: `helper_image` names the docker executor's helper container image, so it takes effect without a
/// warning (it used to be said to have none); `helper_image_flavor` still has none (runwright's default helper
/// image is built locally, GitLab's flavours are registry images).
#[test]
fn helper_image_takes_effect_and_helper_image_flavor_is_said_to_have_none() {
    let text = format!(
        "{HEAD}  [runners.docker]\n    image = \"alpine:3\"\n    helper_image = \"registry.example/helper:x\"\n"
    );
    assert_eq!(warnings(&text), Vec::<String>::new());
    let loaded = parse_str(&text).unwrap();
    assert_eq!(
        loaded.config.runners[0]
            .docker
            .as_ref()
            .unwrap()
            .helper_image
            .as_deref(),
        Some("registry.example/helper:x")
    );
    let text = format!(
        "{HEAD}  [runners.docker]\n    image = \"alpine:3\"\n    helper_image_flavor = \"ubuntu\"\n"
    );
    assert_eq!(
        warnings(&text),
        ["config.toml:8: runners[0].docker.helper_image_flavor: runwright's default helper image is built locally \
          from its own binary, so this key has no effect; set helper_image to use another image (GitLab's too)"]
    );
}

#[test]
fn unknown_keys_everywhere() {
    let text = format!(
        "concurrency = 4\n[session_server]\n  listen = \":8093\"\n{HEAD}  pre_clone_script = \"echo\"\n  [runners.cache.s3]\n    Bucket = \"b\"\n"
    );
    assert_eq!(
        warnings(&text),
        [
            "config.toml:1: unknown key 'concurrency' (ignored)",
            "config.toml:3: unknown key 'session_server.listen' (ignored)",
            "config.toml:9: unknown key 'runners[0].pre_clone_script' (ignored; removed in GitLab Runner 17.0, use pre_get_sources_script)",
            "config.toml:11: unknown key 'runners[0].cache.s3.Bucket' (ignored)",
        ]
    );
}

#[test]
fn environment_entry_without_equals_is_a_warning() {
    let text = format!("{HEAD}  environment = [\"A=1\", \"NOEQ\"]\n");
    assert_eq!(
        warnings(&text),
        ["config.toml:6: runners[0].environment[1]: \"NOEQ\" has no '=' and is ignored, as GitLab's runner does"]
    );
}

#[test]
fn integer_duration_is_nanoseconds_with_a_warning() {
    let text = format!("{HEAD}  unhealthy_interval = 3600\n");
    let loaded = parse_str(&text).unwrap();
    assert_eq!(
        loaded.config.runners[0].unhealthy_interval(),
        Duration::from_nanos(3600)
    );
    assert_eq!(
        warnings(&text),
        ["config.toml:6: runners[0].unhealthy_interval: integer 3600 is read as nanoseconds, as GitLab's runner does; write \"3600s\" for seconds"]
    );
}

#[test]
fn other_executor_sections_are_opaque_and_silent() {
    let text = format!(
        "{HEAD}  [runners.kubernetes]\n    namespace = \"ci\"\n    bearer_token = \"k8s-secret\"\n    [runners.kubernetes.pod_labels]\n      a = \"b\"\n  [runners.ssh]\n    host = \"h\"\n  [runners.machine]\n    IdleCount = 1\n  [runners.autoscaler]\n    plugin = \"aws\"\n    [[runners.autoscaler.policy]]\n      idle_count = 5\n  [runners.parallels]\n    base_name = \"x\"\n  [runners.virtualbox]\n    base_name = \"x\"\n"
    );
    assert_eq!(warnings(&text), Vec::<String>::new());
    let loaded = parse_str(&text).unwrap();
    let r = &loaded.config.runners[0];
    let k8s = r.kubernetes.as_ref().unwrap();
    assert_eq!(k8s["namespace"].as_str(), Some("ci"));
    assert!(r.autoscaler.is_some() && r.machine.is_some() && r.ssh.is_some());
    // Debug shows the keys of opaque sections, not their values.
    assert!(!format!("{r:?}").contains("k8s-secret"));
}

// ---------------------------------------------------------------------------------------------
// A full file: every section GitLab documents, read with its types.

#[test]
fn full_file_reads_every_section() {
    let text = r#"
concurrent = 10
check_interval = 0
log_level = "debug"
log_format = "json"
user = "gitlab-runner"
listen_address = ":9252"
shutdown_timeout = 60
sentry_dsn = "https://sentry.example.com/1"
connection_max_age = "1h30m"
[labels]
  team = "ci"
[session_server]
  listen_address = "[::]:8093"
  advertise_address = "runner.example.com:8093"
  session_timeout = 600
[experimental]
  [experimental.usage_logger]
    enabled = true

[[runners]]
  name = "full"
  url = "https://gitlab.example.com/"
  id = 42
  token = "glrt-t2_abcdefghijklmnopqrst"
  token_obtained_at = 2025-01-01T00:00:00Z
  token_expires_at = 2026-01-01T12:30:00+02:00
  tls-ca-file = "/etc/ssl/ca.pem"
  tls-cert-file = "/etc/ssl/cert.pem"
  tls-key-file = "/etc/ssl/key.pem"
  limit = 3
  output_limit = 8192
  request_concurrency = 2
  strict_check_interval = true
  unhealthy_requests_limit = 5
  unhealthy_interval = "30m"
  job_status_final_update_retry_limit = 4
  executor = "docker"
  shell = "bash"
  builds_dir = "/builds"
  cache_dir = "/cache"
  clone_url = "https://mirror.example.com"
  environment = ["GIT_DEPTH=10", "A=b=c"]
  pre_get_sources_script = "echo pre-get"
  post_get_sources_script = "echo post-get"
  pre_build_script = "echo pre"
  post_build_script = "echo post"
  prepare_timeout = "15m"
  get_sources_timeout = "5m"
  debug_trace_disabled = true
  safe_directory_checkout = true
  clean_git_config = false
  proxy_exec = false
  [runners.labels]
    os_family = "linux"
  [runners.feature_flags]
    FF_NETWORK_PER_BUILD = true
    FF_USE_FASTZIP = false
  [runners.custom_build_dir]
    enabled = true
  [runners.artifact]
    upload_timeout = "1h"
    response_header_timeout = "10m"
  [runners.cache]
    Type = "s3"
    Path = "prefix"
    Shared = true
    MaxUploadedArchiveSize = 1073741824
    [runners.cache.s3]
      ServerAddress = "s3.example.com"
      AccessKey = "AK"
      SecretKey = "SK"
      BucketName = "runner"
      BucketLocation = "eu-west-1"
      Insecure = false
      AuthenticationType = "ACCESS-KEY"
      ServerSideEncryption = "KMS"
      ServerSideEncryptionKeyID = "alias/key"
      DualStack = false
      PathStyle = true
      RoleARN = "arn:aws:iam::1:role/r"
    [runners.cache.gcs]
      CredentialsFile = "/etc/gcs.json"
      BucketName = "b"
    [runners.cache.azure]
      AccountName = "acct"
      AccountKey = "key"
      ContainerName = "c"
      StorageDomain = "blob.core.windows.net"
  [runners.docker]
    host = "unix:///var/run/docker.sock"
    tls_verify = true
    tls_cert_path = "/certs"
    hostname = "build"
    image = "alpine:3"
    runtime = "runc"
    memory = "2g"
    memory_swap = "4g"
    memory_reservation = "1g"
    cpus = "1.5"
    cpu_shares = 512
    cpuset_cpus = "0-1"
    cgroup_parent = "ci.slice"
    dns = ["1.1.1.1"]
    dns_search = ["example.com"]
    privileged = true
    services_privileged = false
    allowed_privileged_images = ["docker:*-dind"]
    disable_entrypoint_overwrite = true
    user = "1000"
    allowed_users = ["1000", "root"]
    group_add = ["docker"]
    userns_mode = "host"
    cap_add = ["NET_ADMIN"]
    cap_drop = ["ALL"]
    oom_kill_disable = true
    oom_score_adjust = -500
    security_opt = ["no-new-privileges"]
    devices = ["/dev/kvm"]
    device_cgroup_rules = ["c 10:232 rwm"]
    gpus = "all"
    services_devices = { "postgres:*" = ["/dev/null"] }
    disable_cache = true
    volumes = ["/cache", "/var/run/docker.sock:/var/run/docker.sock:ro"]
    volume_driver = "local"
    volume_driver_ops = { size = "10G" }
    cache_dir = "/srv/cache"
    extra_hosts = ["gitlab.example.com:10.0.0.1"]
    volumes_from = ["data"]
    network_mode = "bridge"
    ipcmode = "host"
    mac_address = "92:d0:c6:0a:29:33"
    links = ["db:db"]
    services_limit = 2
    service_memory = "512m"
    service_cpus = "0.5"
    service_cpu_shares = 256
    wait_for_services_timeout = -1
    allowed_images = ["ruby:*"]
    allowed_services = ["postgres:*"]
    allowed_pull_policies = ["always", "if-not-present"]
    pull_policy = "if-not-present"
    isolation = "default"
    shm_size = 268435456
    tmpfs = { "/tmp" = "rw,noexec" }
    services_tmpfs = { "/var/lib/postgresql/data" = "rw" }
    sysctls = { "net.ipv4.ip_forward" = "1" }
    helper_image = "registry.example.com/helper:latest"
    helper_image_flavor = "ubuntu"
    container_labels = { owner = "ci" }
    enable_ipv6 = true
    ulimit = { nofile = "1024:2048" }
    network_mtu = 1400
    log_options = { env = "A" }
    [[runners.docker.services]]
      name = "postgres:16"
      alias = "db,pg"
      command = ["postgres", "-c", "fsync=off"]
      entrypoint = ["docker-entrypoint.sh"]
      environment = ["POSTGRES_PASSWORD=x"]
    [[runners.docker.services]]
      name = "redis:7"

[[runners]]
  name = "custom"
  url = "https://gitlab.example.com/"
  token = "glrtr-zyxwvutsrqponmlk"
  executor = "custom"
  [runners.custom]
    config_exec = "/opt/config.sh"
    config_args = ["a"]
    config_exec_timeout = 200
    prepare_exec = "/opt/prepare.sh"
    prepare_exec_timeout = 0
    run_exec = "/opt/run.sh"
    run_args = ["r"]
    cleanup_exec = "/opt/cleanup.sh"
    cleanup_exec_timeout = 300
    graceful_kill_timeout = 30
    force_kill_timeout = 5
"#;
    let loaded = parse_str(text).unwrap();
    assert_eq!(loaded.invalid_runners, vec![]);
    // Every key is read; the ones runwright does not honour say so, with their line.
    let warned: Vec<(usize, &str)> = loaded
        .warnings
        .iter()
        .map(|w| {
            let key = w.message.split([':', ' ']).next().unwrap_or_default();
            (w.line, key)
        })
        .collect();
    assert_eq!(
        warned,
        [
            (9, "sentry_dsn"),
            (10, "connection_max_age"),
            (14, "session_server.listen_address"),
            (17, "experimental"),
            (77, "runners[0].cache.s3.ServerSideEncryption"),
            (78, "runners[0].cache.s3.ServerSideEncryptionKeyID"),
            (81, "runners[0].cache.s3.RoleARN"),
            (149, "runners[0].docker.helper_image_flavor"),
        ],
        "{:#?}",
        loaded.warnings
    );
    for w in &loaded.warnings[..7] {
        assert!(
            w.message
                .contains(" is not supported by runwright and is ignored: "),
            "{w}"
        );
    }
    let c = &loaded.config;
    assert_eq!(c.concurrent, 10);
    assert_eq!(c.check_interval(), Duration::from_secs(3));
    assert_eq!(c.log_level.as_deref(), Some("debug"));
    assert_eq!(c.log_format.as_deref(), Some("json"));
    assert_eq!(c.user.as_deref(), Some("gitlab-runner"));
    assert_eq!(c.shutdown_timeout(), Duration::from_secs(60));
    assert_eq!(c.connection_max_age(), Duration::from_secs(5400));
    assert_eq!(c.labels["team"], "ci");
    let ss = c.session_server.as_ref().unwrap();
    assert_eq!(ss.listen_address.as_deref(), Some("[::]:8093"));
    assert_eq!(ss.session_timeout(), Duration::from_secs(600));
    assert!(c.experimental.is_some());

    let r = &c.runners[0];
    assert_eq!(r.id, 42);
    assert_eq!(r.short_token(), "abcdefghi");
    assert_eq!(
        r.token_expires_at,
        Some(time::macros::datetime!(2026-01-01 12:30:00 +02:00))
    );
    assert_eq!(r.tls_ca_file.as_deref(), Some(Path::new("/etc/ssl/ca.pem")));
    assert_eq!(
        r.tls_cert_file.as_deref(),
        Some(Path::new("/etc/ssl/cert.pem"))
    );
    assert_eq!(
        r.tls_key_file.as_deref(),
        Some(Path::new("/etc/ssl/key.pem"))
    );
    assert_eq!(r.limit, 3);
    assert_eq!(r.output_limit_bytes(), 8192 * 1024);
    assert_eq!(r.request_concurrency(), 2);
    assert!(r.strict_check_interval);
    assert_eq!(r.unhealthy_requests_limit(), 5);
    assert_eq!(r.unhealthy_interval(), Duration::from_secs(1800));
    assert_eq!(r.final_update_retry_limit(), 4);
    assert_eq!(r.shell.as_deref(), Some("bash"));
    assert_eq!(r.builds_dir.as_deref(), Some("/builds"));
    assert_eq!(r.clone_url.as_deref(), Some("https://mirror.example.com"));
    assert_eq!(
        r.environment_variables(),
        vec![
            ("GIT_DEPTH".to_owned(), "10".to_owned()),
            ("A".to_owned(), "b=c".to_owned())
        ]
    );
    assert_eq!(r.pre_get_sources_script.as_deref(), Some("echo pre-get"));
    assert_eq!(r.post_build_script.as_deref(), Some("echo post"));
    assert_eq!(r.prepare_timeout, Some(Duration::from_secs(900)));
    assert_eq!(r.get_sources_timeout, Some(Duration::from_secs(300)));
    assert!(r.debug_trace_disabled);
    assert_eq!(r.safe_directory_checkout, Some(true));
    assert_eq!(r.clean_git_config, Some(false));
    assert_eq!(r.proxy_exec, Some(false));
    assert_eq!(r.labels["os_family"], "linux");
    // The global labels under the entry's own: what GitLab gets as `info.labels`.
    assert_eq!(
        r.computed_labels,
        [("os_family", "linux"), ("team", "ci")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    );
    assert_eq!(r.feature_flag("FF_NETWORK_PER_BUILD"), Some(true));
    assert_eq!(r.feature_flag("FF_USE_FASTZIP"), Some(false));
    assert_eq!(r.feature_flag("FF_UNSET"), None);
    assert_eq!(r.custom_build_dir.as_ref().unwrap().enabled, Some(true));
    let artifact = r.artifact.as_ref().unwrap();
    assert_eq!(artifact.upload_timeout, Some(Duration::from_secs(3600)));

    let cache = r.cache.as_ref().unwrap();
    assert_eq!(cache.cache_type, Some(CacheType::S3));
    assert!(cache.shared);
    assert_eq!(cache.max_uploaded_archive_size, 1 << 30);
    let s3 = cache.s3.as_ref().unwrap();
    assert_eq!(
        s3.authentication_type,
        Some(runwright_config::S3AuthType::AccessKey)
    );
    assert_eq!(
        s3.server_side_encryption_key_id.as_deref(),
        Some("alias/key")
    );
    assert!(!s3.dual_stack_enabled());
    assert_eq!(s3.path_style, Some(true));
    assert_eq!(s3.role_arn.as_deref(), Some("arn:aws:iam::1:role/r"));
    assert_eq!(
        cache.azure.as_ref().unwrap().storage_domain.as_deref(),
        Some("blob.core.windows.net")
    );
    // Secrets are masked in Debug.
    let dbg = format!("{r:?}");
    assert!(
        !dbg.contains("\"SK\"") && !dbg.contains("abcdefghijklmnopqrst"),
        "{dbg}"
    );

    let d = r.docker.as_ref().unwrap();
    assert_eq!(d.memory_bytes(), 2 << 30);
    assert_eq!(d.memory_swap_bytes(), 4 << 30);
    assert_eq!(d.nano_cpus(), 1_500_000_000);
    assert_eq!(d.service_nano_cpus(), 500_000_000);
    assert_eq!(d.cpu_shares, 512);
    assert_eq!(d.services_privileged, Some(false));
    assert_eq!(d.oom_score_adjust, -500);
    assert_eq!(d.services_devices["postgres:*"], vec!["/dev/null"]);
    assert_eq!(d.volume_driver_ops["size"], "10G");
    assert_eq!(d.services_limit(), Some(2));
    assert_eq!(d.wait_for_services_timeout(), None);
    assert_eq!(d.pull_policy, vec![PullPolicy::IfNotPresent]);
    assert_eq!(
        d.allowed_pull_policies(),
        vec![PullPolicy::Always, PullPolicy::IfNotPresent]
    );
    assert_eq!(d.shm_size, 268_435_456);
    assert_eq!(d.tmpfs["/tmp"], "rw,noexec");
    assert_eq!(d.sysctls["net.ipv4.ip_forward"], "1");
    assert_eq!(d.ulimit["nofile"], "1024:2048");
    assert_eq!(d.network_mtu, 1400);
    assert_eq!(d.services.len(), 2);
    assert_eq!(d.services[0].aliases(), vec!["db", "pg"]);
    assert_eq!(d.services[0].command, vec!["postgres", "-c", "fsync=off"]);
    assert_eq!(d.services[1].name, "redis:7");

    let custom_runner = &c.runners[1];
    assert_eq!(custom_runner.short_token(), "zyxwvutsr");
    let custom = custom_runner.custom.as_ref().unwrap();
    assert_eq!(custom.run_exec, "/opt/run.sh");
    assert_eq!(custom.config_exec_timeout(), Duration::from_secs(200));
    assert_eq!(custom.prepare_exec_timeout(), Duration::from_secs(3600));
    assert_eq!(custom.cleanup_exec_timeout(), Duration::from_secs(300));
    assert_eq!(custom.graceful_kill_timeout(), Duration::from_secs(30));
    assert_eq!(custom.force_kill_timeout(), Duration::from_secs(5));
}

#[test]
fn a_byte_order_mark_is_tolerated() {
    let text = format!("\u{feff}concurrent = 3\n{HEAD}");
    assert_eq!(parse_str(&text).unwrap().config.concurrent, 3);
}

// ---------------------------------------------------------------------------------------------
// Tokens never appear in a message.

#[test]
fn tokens_never_appear_in_errors() {
    let secret = "glrt-t1_SECRETSECRETSECRET";
    let cases = [
        // The token as a wrong type: the value is quoted, shortened.
        "[[runners]]\n  url = \"https://x/\"\n  token = 123456789012345\n  executor = \"shell\"\n"
            .to_owned(),
        format!("{HEAD}  limit = \"{secret}\"\n"),
        format!("{HEAD}  [runners.docker]\n    pull_policy = \"{secret}\"\n"),
        format!("{HEAD}  executor = \"{secret}\"\n"),
    ];
    for text in &cases {
        // A duplicate key is a syntax error of the file; the others make the entry invalid.
        let shown = match parse_str(text) {
            Err(e) => vec![e.to_string()],
            Ok(loaded) => {
                let bad = &loaded.invalid_runners[0];
                vec![format!("{bad}"), format!("{bad:?}")]
            }
        };
        for shown in shown {
            assert!(!shown.contains("SECRETSECRETSECRET"), "{shown}");
            assert!(!shown.contains("123456789012345"), "{shown}");
        }
    }
    assert_eq!(
        entry_error(&cases[0]),
        "config.toml:3:11: runners[0].token: invalid type: integer `123456789`, expected a string"
    );
    assert_eq!(
        entry_error(&cases[1]),
        "config.toml:6:11: runners[0].limit: invalid type: string \"SECRETSEC\", expected an integer"
    );
}

// ---------------------------------------------------------------------------------------------
// Short tokens (protocol.md §0, runner helpers/shorten_token.go)

#[test]
fn short_token_cases() {
    let cases = [
        ("glrt-t1_0123456789abcdefghij", "012345678"),
        ("glrt-t3_0123456789abcdefghij", "012345678"),
        ("glrt-0123456789abcdefghij", "012345678"),
        ("t2_0123456789abcdefghij", "012345678"),
        ("glrtr-0123456789abcdefghij", "012345678"),
        ("glcbt-0123456789abcdefghij", "012345678"),
        ("GR13489410123456789abcdefghij", "012345678"),
        ("GR1348941_iAgdMy7a3NhZaa5oNoH", "_iAgdMy7a"),
        ("rVavKoxxxxxxxxxxxxxxxxxxxxxx", "rVavKoxxx"),
        ("4C6AVjxxxxxxxxxxxxxxxxxxxxxx", "4C6AVjxxx"),
        ("short", "short"),
    ];
    for (token, short) in cases {
        assert_eq!(short_token(token), short, "{token}");
    }
}

// ---------------------------------------------------------------------------------------------
// .runner_system_id

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn system_id_is_created_beside_the_config_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let id = load_or_create_system_id(&config).unwrap();
    assert!(runwright_config::is_valid_system_id(&id), "{id}");
    assert!(id.starts_with("s_") || id.starts_with("r_"), "{id}");
    let file = dir.path().join(".runner_system_id");
    assert_eq!(system_id_path(&config), file);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), id);
    #[cfg(unix)]
    assert_eq!(mode(&file), 0o600);
    // Reused on the next start.
    assert_eq!(load_or_create_system_id(&config).unwrap(), id);
}

#[test]
fn system_id_from_the_file_is_kept_even_when_hand_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(dir.path().join(".runner_system_id"), "r_ABCDEF123456\n").unwrap();
    assert_eq!(load_or_create_system_id(&config).unwrap(), "r_ABCDEF123456");
}

#[test]
fn malformed_system_id_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let file = dir.path().join(".runner_system_id");
    std::fs::write(&file, "not an id").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let id = load_or_create_system_id(&config).unwrap();
    assert!(runwright_config::is_valid_system_id(&id), "{id}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), id);
    #[cfg(unix)]
    assert_eq!(mode(&file), 0o600);
}

#[cfg(unix)]
#[test]
fn system_id_that_cannot_be_saved_is_still_given() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let file = dir.path().join(".runner_system_id");
    // A dangling symlink into a missing directory: reading finds nothing, writing fails
    // (even as root, unlike a read-only directory).
    std::os::unix::fs::symlink(dir.path().join("missing/target"), &file).unwrap();
    match load_or_create_system_id(&config) {
        Err(e @ ConfigError::SystemIdWrite { .. }) => {
            let msg = e.to_string();
            let ConfigError::SystemIdWrite { id, path, .. } = e else {
                unreachable!()
            };
            assert!(runwright_config::is_valid_system_id(&id), "{id}");
            assert_eq!(path, file);
            assert!(
                msg.starts_with(&format!(
                    "{}: cannot save runner system ID {id}: ",
                    file.display()
                )),
                "{msg}"
            );
        }
        other => panic!("expected SystemIdWrite, got {other:?}"),
    }
}

#[test]
fn machine_derived_system_id_matches_gitlab() {
    // HMAC-SHA256(key = machine id, "gitlab-runner"), first 12 hex digits
    // (runner commands/internal/configfile/system_id_state.go).
    let id = runwright_config::system_id_from_machine_id("0123456789abcdef0123456789abcdef");
    assert_eq!(id.len(), 14);
    assert!(id.starts_with("s_"));
    assert!(id[2..].bytes().all(|b| b.is_ascii_hexdigit()));
}

#[cfg(unix)]
#[test]
fn default_config_path_follows_gitlab() {
    let path = runwright_config::default_config_path();
    if nix::unistd::getuid().is_root() {
        assert_eq!(path, Path::new("/etc/gitlab-runner/config.toml"));
    } else {
        assert!(path.ends_with(".gitlab-runner/config.toml"), "{path:?}");
    }
}

#[test]
fn tokens_never_appear_in_syntax_errors() {
    let cases = [
        "[[runners]]\n  token = glrt-SECRETSECRETSECRET\n",
        "[[runners]]\n  token = \"glrt-SECRETSECRETSECRET\n",
        "[[runners]]\n  token = \"glrt-\\qSECRETSECRETSECRET\"\n",
        "[[runners]]\n  token = \"glrt-SECRETSECRETSECRET\" x\n",
        "[[runners]]\n  token = 'glrt-SECRETSECRETSECRET\n",
        "[[runners]]\n  token = \"\"\"glrt-SECRETSECRETSECRET\n",
    ];
    for text in cases {
        let msg = error(text);
        assert!(!msg.contains("SECRETSECRET"), "{msg}");
        assert!(msg.starts_with("config.toml:"), "{msg}");
    }
}

#[test]
fn keys_in_another_case_are_read_as_gitlab_does_with_a_warning() {
    let text = r#"Concurrent = 2
[[runners]]
  name = "r"
  URL = "https://gitlab.example.com/"
  token = "abcdefghijkl"
  Executor = "docker"
  [runners.cache]
    type = "s3"
    [runners.cache.S3]
      bucketname = "b"
  [runners.Docker]
    Image = "alpine"
    image = "debian"
    [[runners.Docker.services]]
      Name = "postgres"
  [runners.feature_flags]
    ff_network_per_build = true
"#;
    let loaded = parse_str(text).unwrap();
    let c = &loaded.config;
    assert_eq!(c.concurrent, 2);
    let r = &c.runners[0];
    assert_eq!(r.url, "https://gitlab.example.com/");
    assert_eq!(r.executor, "docker");
    let cache = r.cache.as_ref().unwrap();
    assert_eq!(cache.cache_type, Some(CacheType::S3));
    assert_eq!(cache.s3.as_ref().unwrap().bucket_name.as_deref(), Some("b"));
    let d = r.docker.as_ref().unwrap();
    // Both spellings present: the exact one wins, the other is unknown.
    assert_eq!(d.image.as_deref(), Some("debian"));
    assert_eq!(d.services[0].name, "postgres");
    // Feature flag names are map keys: kept as written, as in GitLab.
    assert_eq!(r.feature_flag("ff_network_per_build"), Some(true));
    assert_eq!(r.feature_flag("FF_NETWORK_PER_BUILD"), None);
    let why = "(GitLab's runner matches keys case-insensitively)";
    assert_eq!(
        warnings(text),
        [
            format!("config.toml:1: key 'Concurrent' is read as 'concurrent' {why}"),
            format!("config.toml:4: key 'runners[0].URL' is read as 'url' {why}"),
            format!("config.toml:6: key 'runners[0].Executor' is read as 'executor' {why}"),
            format!("config.toml:8: key 'runners[0].cache.type' is read as 'Type' {why}"),
            format!("config.toml:9: key 'runners[0].cache.S3' is read as 's3' {why}"),
            format!(
                "config.toml:10: key 'runners[0].cache.s3.bucketname' is read as 'BucketName' {why}"
            ),
            format!("config.toml:11: key 'runners[0].Docker' is read as 'docker' {why}"),
            "config.toml:12: unknown key 'runners[0].docker.Image' (ignored)".to_owned(),
            format!(
                "config.toml:15: key 'runners[0].docker.services[0].Name' is read as 'name' {why}"
            ),
        ]
    );
}

// [journal] (runwright's extension, issue 6)

#[test]
fn journal_section_loads_without_warnings_and_flags_unknown_keys() {
    let loaded = parse_str(
        "[journal]\nenabled = true\ndir = \"/var/lib/runwright/journal\"\nmax_jobs = 50\nmax_age = \"72h\"\nmax_size_mb = 1024\nmax_trace_mb = 64\nmin_free_mb = 512\n",
    )
    .expect("loads");
    assert_eq!(loaded.warnings, vec![]);
    let j = loaded.config.journal.expect("journal section");
    assert_eq!(j.enabled, Some(true));
    assert_eq!(j.dir, Some(PathBuf::from("/var/lib/runwright/journal")));
    assert_eq!(j.max_jobs, Some(50));
    assert_eq!(j.max_age, Some(Duration::from_secs(72 * 3600)));
    assert_eq!(j.max_size_mb, Some(1024));
    assert_eq!(j.max_trace_mb, Some(64));
    assert_eq!(j.min_free_mb, Some(512));
    let w = warnings("[journal]\nmax_job = 5\n");
    assert!(
        w.iter()
            .any(|w| w.contains("unknown key") && w.contains("max_job")),
        "{w:?}"
    );
}

// [dashboard] (runwright's extension, issue 6)

#[test]
fn dashboard_section_loads_masks_its_token_and_flags_unknown_keys() {
    let loaded =
        parse_str("[dashboard]\nenabled = true\ntoken = \"s3cret-dash\"\n").expect("loads");
    assert_eq!(loaded.warnings, vec![]);
    let d = loaded.config.dashboard.clone().expect("dashboard section");
    assert_eq!(d.enabled, Some(true));
    assert_eq!(d.token.as_deref(), Some("s3cret-dash"));
    let debug = format!("{:?}", loaded.config);
    assert!(!debug.contains("s3cret-dash"), "{debug}");
    let w = warnings("[dashboard]\ntokn = \"x\"\n");
    assert!(
        w.iter()
            .any(|w| w.contains("unknown key") && w.contains("tokn")),
        "{w:?}"
    );
}
