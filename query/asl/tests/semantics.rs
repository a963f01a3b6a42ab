//! Query semantics as data: runs every `tests/data/*.test` case against a real store, in
//! process. The file format is described in `src/cases.rs`; the end-to-end tests run the
//! same files through `argus eval`.

use std::path::Path;

use argus_query::cases::load_dir;

#[test]
fn semantics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let files = load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    let mut failures = Vec::new();
    let mut n_cases = 0;
    for (name, groups) in &files {
        for group in groups {
            let store = match group.store() {
                Ok(s) => s,
                Err(e) => {
                    failures.push(format!("{name}: load: {e}"));
                    continue;
                }
            };
            for case in &group.cases {
                n_cases += 1;
                let outcome = case.run(group, &store);
                if let Err(e) = case.check(outcome.as_deref().map_err(String::as_str)) {
                    failures.push(e);
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n_cases} cases failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(n_cases >= 200, "only {n_cases} cases");
    eprintln!("{n_cases} semantic cases in {} files", files.len());
}
