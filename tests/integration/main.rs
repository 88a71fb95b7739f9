//! Integration tests: real runc containers guarded by the real supervisor. They need root,
//! runc, gcc (with -m32), musl-gcc and patchelf; `.ci/run` installs all of them.

mod cli;
mod containerd;
mod failsafe;
mod harness;
mod hostile;
mod legit;
mod operations;
mod podman;
mod profiles;
mod races;
mod survival;
mod threats;
