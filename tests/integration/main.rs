//! Integration tests: real runc containers guarded by the real supervisor. They need root,
//! runc, gcc (with -m32), musl-gcc and patchelf; `.ci/run` installs all of them.

/// Skips a test that needs root (it runs real containers) when the suite is not run as root:
/// a contributor's plain `cargo test` passes; CI runs as root and runs every test.
macro_rules! needs_root {
    () => {
        if !nix::unistd::geteuid().is_root() {
            // The project's test command runs as root and sets this: there, nothing may skip.
            assert!(
                std::env::var_os("EXECGUARD_TEST_STRICT").is_none(),
                "needs root to run real containers"
            );
            eprintln!("skipped: needs root to run real containers");
            return;
        }
    };
}

mod allow;
mod audit_modules;
mod cli;
mod containerd;
mod cri;
mod docker;
mod failsafe;
mod flood;
/// The support shared with the benchmark (`tests/support`).
mod harness {
    pub use execguard_testkit::*;
}
mod hostile;
mod judged;
mod kubernetes;
mod layout;
mod legit;
mod loader_corpus;
mod message;
mod old_loaders;
mod operations;
mod podman;
mod preloads;
mod privilege;
mod profiles;
mod races;
mod record;
mod run;
mod scheduling;
mod survival;
mod systemd;
mod threats;
mod vm;
