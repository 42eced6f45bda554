//! Where a job's files live: builds dir, project dir, temp dir (reference `protocol.md` §7.4).

use runwright_api::types::JobResponse;
use std::path::{Path, PathBuf};

/// The project's path below the builds dir: the repository URL's path without `.git`
/// (runner common/build.go `ProjectUniqueDir`), or `project-<id>` when there is none.
pub fn project_slug(job: &JobResponse) -> String {
    let from_url = url::Url::parse(&job.git_info.repo_url)
        .ok()
        .map(|u| {
            u.path()
                .trim_matches('/')
                .trim_end_matches(".git")
                .to_string()
        })
        .filter(|p| !p.is_empty() && p.split('/').all(safe_segment));
    from_url.unwrap_or_else(|| format!("project-{}", job.job_info.project_id))
}

fn safe_segment(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".."
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobDirs {
    pub builds_dir: PathBuf,
    pub project_dir: PathBuf,
    /// `<project dir>.tmp`: file variables, `GITLAB_ENV`, git template.
    pub tmp_dir: PathBuf,
}

impl JobDirs {
    pub fn new(
        builds_dir: &Path,
        shared: bool,
        short_token: &str,
        concurrent_project_id: usize,
        slug: &str,
        empty_strategy: bool,
    ) -> Self {
        let mut project_dir = builds_dir.to_path_buf();
        if shared {
            project_dir.push(short_token);
            project_dir.push(concurrent_project_id.to_string());
        }
        let slug = if empty_strategy {
            format!("{slug}-empty")
        } else {
            slug.to_string()
        };
        project_dir.push(slug);
        let mut tmp = project_dir.clone().into_os_string();
        tmp.push(".tmp");
        Self {
            builds_dir: builds_dir.to_path_buf(),
            project_dir,
            tmp_dir: PathBuf::from(tmp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_layout_uses_short_token_and_project_slot() {
        let mut job = JobResponse::default();
        job.git_info.repo_url = "https://gitlab-ci-token:x@git.example/grp/sub/app.git".into();
        let slug = project_slug(&job);
        assert_eq!(slug, "grp/sub/app");
        let d = JobDirs::new(Path::new("/b"), true, "abcdefghi", 2, &slug, false);
        assert_eq!(d.project_dir, PathBuf::from("/b/abcdefghi/2/grp/sub/app"));
        assert_eq!(d.tmp_dir, PathBuf::from("/b/abcdefghi/2/grp/sub/app.tmp"));
        let d = JobDirs::new(Path::new("/builds"), false, "x", 0, &slug, true);
        assert_eq!(d.project_dir, PathBuf::from("/builds/grp/sub/app-empty"));
    }

    #[test]
    fn hostile_repo_path_falls_back_to_project_id() {
        let mut job = JobResponse::default();
        job.job_info.project_id = 42;
        job.git_info.repo_url = "https://h/../../etc.git".into();
        assert_eq!(project_slug(&job), "etc");
        job.git_info.repo_url = "not a url".into();
        assert_eq!(project_slug(&job), "project-42");
    }
}
