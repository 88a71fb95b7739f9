//! `execguard-runtime`: a runc/crun stand-in that guards containers (see `execguard::runtime`).

fn main() -> std::process::ExitCode {
    execguard::runtime::main(std::env::args_os().collect())
}
