//! Replays every committed fuzz seed (`fuzz/seeds/<target>/`) through the check its fuzz target runs, so the
//! normal test suite keeps the seeds (and the crashes found, committed there as seeds) passing without nightly.
use std::path::PathBuf;

#[test]
fn every_seed_passes_its_check() {
    let seeds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
    let mut failures = Vec::new();
    for (target, check) in runwright_fuzzcheck::TARGETS {
        let dir = seeds.join(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no seeds in {}", dir.display());
        for file in files {
            let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                failures.push(file.display().to_string());
            }
        }
    }
    assert!(
        failures.is_empty(),
        "seeds failing their check: {failures:#?}"
    );
}
