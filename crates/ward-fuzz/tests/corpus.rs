//! Replays every committed seed of every fuzz target through the function the target runs,
//! so the targets and their corpora are checked by `cargo test` on the stable toolchain.

use std::path::Path;

#[test]
fn every_seed_of_every_target_runs_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for (target, run) in ward_fuzz::TARGETS {
        let dir = root.join(target);
        let mut seeds: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("a corpus entry").path())
            .collect();
        seeds.sort();
        assert!(!seeds.is_empty(), "{target} has no seed in {}", dir.display());
        for seed in seeds {
            let data = std::fs::read(&seed).unwrap_or_else(|e| panic!("{}: {e}", seed.display()));
            eprintln!("{target}: {}", seed.display());
            run(&data);
        }
    }
}
