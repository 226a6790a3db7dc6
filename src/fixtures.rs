//! Where the tests find the shared reference fixtures (`shared/fixtures/`).
//!
//! The fixtures live outside the repository, so a checkout without them must
//! still pass its tests: a fixture test asks [`fixtures_dir`] and returns early
//! when it gets `None`. Setting `CIFAR_KERN_REQUIRE_FIXTURES=1` (e.g. in CI) makes a
//! missing fixture folder fail loudly instead of skipping silently.

use std::env;
use std::path::PathBuf;

/// Overrides the fixture folder.
pub const FIXTURES_VAR: &str = "CIFAR_KERN_FIXTURES";
/// When `1`, a missing fixture folder is an error rather than a skip.
pub const REQUIRE_FIXTURES_VAR: &str = "CIFAR_KERN_REQUIRE_FIXTURES";

/// The fixture folder: `$CIFAR_KERN_FIXTURES`, else `../shared/fixtures`
/// beside the crate root. Prints a skip notice and returns `None` when it does
/// not exist.
///
/// # Panics
/// When the folder does not exist and `CIFAR_KERN_REQUIRE_FIXTURES=1`.
pub fn fixtures_dir() -> Option<PathBuf> {
    let dir = env::var_os(FIXTURES_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"));
    if dir.is_dir() {
        return Some(dir);
    }
    if env::var(REQUIRE_FIXTURES_VAR).is_ok_and(|v| v == "1") {
        panic!(
            "fixtures not found at {} but {REQUIRE_FIXTURES_VAR}=1 (set {FIXTURES_VAR} to the fixtures folder)",
            dir.display()
        );
    }
    println!("skipped: fixtures not found at {}", dir.display());
    None
}
