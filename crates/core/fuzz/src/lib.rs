//! The fixture every fuzz target shares: `layerfold_core::fuzzing::Fixture` over stories260K from
//! `$LAYERFOLD_SHARED` (default `../shared` beside the checkout), with a scratch folder of its own
//! under `/dev/shm` (or the temporary folder) named after the target and the process.

use std::path::PathBuf;
use std::sync::OnceLock;

pub use layerfold_core::fuzzing::Fixture;

pub fn fixture(target: &str) -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let shared = std::env::var_os("LAYERFOLD_SHARED").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../../shared")
        });
        let stories = shared.join("models/stories260K");
        assert!(stories.exists(), "missing {}: the fuzz targets read ../shared", stories.display());
        let base = PathBuf::from("/dev/shm");
        let base = if base.is_dir() { base } else { std::env::temp_dir() };
        let scratch = base.join(format!("layerfold-fuzz-{target}-{}", std::process::id()));
        Fixture::new(&scratch, &stories).unwrap_or_else(|e| panic!("fuzz fixture: {e}"))
    })
}
