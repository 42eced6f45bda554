//! Path globs as GitLab matches them for `changes:`, `exists:` and `include:local` wildcards:
//! `File.fnmatch?(pattern, path, File::FNM_PATHNAME | File::FNM_DOTMATCH | File::FNM_EXTGLOB)`.
//!
//! With `FNM_PATHNAME`, `*`, `?` and `[...]` do not match `/`, and `**/` matches zero or more directories;
//! `FNM_DOTMATCH` lets `*` match a leading dot; `FNM_EXTGLOB` enables `{a,b}`. `globset` with
//! `literal_separator(true)` and `backslash_escape(true)` gives the same, except that a trailing `/**` matches
//! everything below in globset while Ruby treats it as `/*` (documented deviation).
use globset::{Glob, GlobBuilder, GlobMatcher};

/// Compiles a GitLab path glob.
pub(crate) fn compile(pattern: &str) -> Result<GlobMatcher, String> {
    let pattern = pattern.strip_prefix("./").unwrap_or(pattern);
    let glob: Glob = GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .empty_alternates(true)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(glob.compile_matcher())
}

/// Does any of `paths` match `pattern`?
pub(crate) fn any_match(pattern: &str, paths: &[String]) -> Result<bool, String> {
    let m = compile(pattern)?;
    Ok(paths.iter().any(|p| m.is_match(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, path: &str) -> bool {
        compile(p).expect("glob").is_match(path)
    }

    #[test]
    fn fnmatch_semantics() {
        assert!(m("*.md", "README.md"));
        assert!(
            !m("*.md", "docs/README.md"),
            "FNM_PATHNAME: * does not cross /"
        );
        assert!(m("**/*.md", "docs/a/README.md"));
        assert!(m("**/*.md", "README.md"), "**/ matches zero directories");
        assert!(m("docs/**/*.md", "docs/x.md"));
        assert!(m("*", ".gitlab-ci.yml"), "FNM_DOTMATCH");
        assert!(m("{src,lib}/*.rs", "lib/a.rs"), "FNM_EXTGLOB");
        assert!(!m("{src,lib}/*.rs", "bin/a.rs"));
        assert!(m("Dockerfile", "Dockerfile"));
        assert!(m("[a-c].txt", "b.txt"));
        assert!(m("./a.txt", "a.txt"));
    }
}
