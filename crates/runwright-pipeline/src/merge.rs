//! GitLab's deep merge, used by `include:` (later files override earlier ones, the including file overrides
//! them all) and `extends:` (the job overrides its parents): hashes merge key by key, everything else —
//! arrays included — is replaced.
use yaml_serde::{Mapping, Value};

/// Merges `over` into `base`: `over` wins, mappings are merged recursively.
pub(crate) fn deep_merge(base: &mut Mapping, over: Mapping) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Mapping(b)), Value::Mapping(o)) => deep_merge(b, o),
            (Some(slot), v) => *slot = v,
            (None, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_merge_arrays_replace() {
        let mut a: Mapping = yaml_serde::from_str("x: {a: 1, b: [1, 2]}\ny: 1").expect("yaml");
        let b: Mapping = yaml_serde::from_str("x: {b: [3], c: 2}\nz: 3").expect("yaml");
        deep_merge(&mut a, b);
        let want: Mapping =
            yaml_serde::from_str("x: {a: 1, b: [3], c: 2}\ny: 1\nz: 3").expect("yaml");
        assert_eq!(a, want);
    }
}
