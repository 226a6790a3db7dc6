//! Where the tests find the shared reference fixtures (`shared/fixtures/`).
//!
//! The fixtures live outside the repository, so a checkout without them must
//! still pass its tests: the fixture tests (`tests/fixtures/`) ask
//! [`fixtures_dir`] and, when it says the folder is missing, are reported as
//! ignored with its reason. Setting `CIFAR_KERN_REQUIRE_FIXTURES=1` (e.g. in
//! CI) makes them fail instead.

use std::env;
use std::path::PathBuf;

/// Overrides the fixture folder.
pub const FIXTURES_VAR: &str = "CIFAR_KERN_FIXTURES";
/// When `1`, a missing fixture folder fails the fixture tests rather than
/// having them ignored.
pub const REQUIRE_FIXTURES_VAR: &str = "CIFAR_KERN_REQUIRE_FIXTURES";

/// The fixture folder: `$CIFAR_KERN_FIXTURES`, else `../shared/fixtures`
/// beside the crate root; or, when it does not exist, why not.
pub fn fixtures_dir() -> Result<PathBuf, String> {
    let dir = env::var_os(FIXTURES_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"));
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(format!(
            "{} is not a folder; set {FIXTURES_VAR} to the fixtures folder",
            dir.display()
        ))
    }
}
