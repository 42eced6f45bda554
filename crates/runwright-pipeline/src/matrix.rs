//! `parallel:` expansion into concrete jobs with GitLab's names: `parallel: 3` gives `test 1/3` … `test 3/3`;
//! `parallel:matrix` gives one job per combination, named `build: [linux, amd64]` (the values in the order
//! the variables are written; for each row, the first variable varies slowest, as Ruby's `Array#product`).
//! GitLab allows at most 200 jobs from one `parallel:` (docs: "parallel:matrix").
use crate::job::Parallel;

/// The most jobs one `parallel:` may create.
pub(crate) const MAX_PARALLEL: usize = 200;

/// One concrete job of a parallel job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Instance {
    pub name: String,
    /// 1-based index and total (`CI_NODE_INDEX`, `CI_NODE_TOTAL`), None for a plain job.
    pub node: Option<(usize, usize)>,
    /// Matrix variables, in order.
    pub vars: Vec<(String, String)>,
}

/// All combinations of one matrix row.
pub(crate) fn row_combinations(row: &[(String, Vec<String>)]) -> Vec<Vec<(String, String)>> {
    let mut out: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for (key, values) in row {
        let mut next = Vec::with_capacity(out.len() * values.len().max(1));
        for prefix in &out {
            for v in values {
                let mut p = prefix.clone();
                p.push((key.clone(), v.clone()));
                next.push(p);
            }
        }
        out = next;
    }
    out.retain(|c| !c.is_empty());
    out
}

/// GitLab's name of a matrix job.
pub(crate) fn matrix_name(base: &str, vars: &[(String, String)]) -> String {
    let values: Vec<&str> = vars.iter().map(|(_, v)| v.as_str()).collect();
    format!("{base}: [{}]", values.join(", "))
}

/// Expands a job's `parallel:`; `Err(count)` when it would create more than 200 jobs.
pub(crate) fn expand(base: &str, parallel: Option<&Parallel>) -> Result<Vec<Instance>, usize> {
    match parallel {
        None => Ok(vec![Instance {
            name: base.to_string(),
            node: None,
            vars: Vec::new(),
        }]),
        Some(Parallel::Count(n)) => {
            let n = *n as usize;
            Ok((1..=n)
                .map(|i| Instance {
                    name: format!("{base} {i}/{n}"),
                    node: Some((i, n)),
                    vars: Vec::new(),
                })
                .collect())
        }
        Some(Parallel::Matrix(rows)) => {
            let combos: Vec<Vec<(String, String)>> =
                rows.iter().flat_map(|r| row_combinations(r)).collect();
            let total = combos.len();
            if total > MAX_PARALLEL {
                return Err(total);
            }
            Ok(combos
                .into_iter()
                .enumerate()
                .map(|(i, vars)| Instance {
                    name: matrix_name(base, &vars),
                    node: Some((i + 1, total)),
                    vars,
                })
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kv: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn names() {
        let p = Parallel::Count(3);
        let names: Vec<String> = expand("test", Some(&p))
            .expect("ok")
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names, ["test 1/3", "test 2/3", "test 3/3"]);
        let m = Parallel::Matrix(vec![
            row(&[("OS", &["linux", "mac"]), ("ARCH", &["amd64", "arm64"])]),
            row(&[("OS", &["windows"]), ("ARCH", &["amd64"])]),
        ]);
        let names: Vec<String> = expand("build", Some(&m))
            .expect("ok")
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(
            names,
            [
                "build: [linux, amd64]",
                "build: [linux, arm64]",
                "build: [mac, amd64]",
                "build: [mac, arm64]",
                "build: [windows, amd64]"
            ]
        );
    }

    #[test]
    fn too_many() {
        let vals: Vec<String> = (0..15).map(|i| i.to_string()).collect();
        let m = Parallel::Matrix(vec![vec![("A".into(), vals.clone()), ("B".into(), vals)]]);
        assert_eq!(expand("x", Some(&m)), Err(225));
    }
}
