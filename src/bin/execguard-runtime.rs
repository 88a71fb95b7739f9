//! `execguard-runtime`: a runc/crun stand-in that guards containers (see `execguard::runtime`).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    execguard::runtime::main(std::env::args_os().collect())
}
