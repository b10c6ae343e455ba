//! Finding the release binary that a bench times.

use std::{
    env,
    path::{Path, PathBuf},
};

/// The release binary that `cargo bench` built next to this bench.
///
/// A bench target gets no `CARGO_BIN_EXE_*` variable, but cargo puts bench
/// executables in `target/release/deps/` and binaries in `target/release/`,
/// so the binary is two levels up from this executable's path. Panics with
/// the path it looked at when it is missing, rather than timing nothing.
pub fn binary() -> PathBuf {
    let exe = env::current_exe().expect("cannot find the bench executable");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("port_exporter"))
        .expect("the bench executable has no grandparent directory");
    assert!(
        path.is_file(),
        "{} is missing: build it first (`cargo bench --bench scan` builds it; so does \
         `cargo build --release`)",
        path.display()
    );
    path
}
