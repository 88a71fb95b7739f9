//! execguard: stops programs from being run through the dynamic loader inside CI build
//! containers, and logs every attempt.
//!
//! - [`spec`]: patches an OCI spec so that the runtime hands execs to the supervisor;
//! - [`guard`]: whether a container is guarded, shared by `inject`, the hook and the wrapper;
//! - [`runtime`]: `execguard-runtime`, the runc/crun wrapper for containerd, CRI-O, podman;
//! - [`supervisor`]: receives the notify fds, answers every exec;
//! - [`inspect`]: resolves and classifies an exec's target, parses loader arguments;
//! - [`policy`]: from an inspection and a container's settings to a verdict (no I/O);
//! - [`event`]: the JSON event lines; [`config`]: the TOML config;
//! - [`setup`]: writes podman's, containerd's and CRI-O's configuration for execguard;
//! - [`commands`]: what the `execguard` binary's subcommands do;
//! - [`phases`]: where the handling of a notification spends its time;
//! - [`fsutil`]: replacing a file atomically (bundles, engine configs);
//! - [`sys`]: the only `unsafe` code, the seccomp notification ioctls.

// Everything not reachable from outside says so: `pub(crate)`, not `pub`.
#![warn(unreachable_pub)]
// `unsafe` lives in `sys` alone (which allows it, module by module); anywhere else it fails the
// build.
#![deny(unsafe_code)]

// The system call numbers, the audit architectures and the loader paths are those of x86_64
// Linux (its 32-bit and x32 ABIs included) and arm64 Linux (32-bit ARM included): `traps`.
#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
compile_error!(
    "execguard supports x86_64 and arm64 Linux only (it decodes those kernels' system call ABIs)"
);

// The public surface is what the binaries, the fuzz targets, the benchmark and the
// integration tests use; everything else is `pub(crate)`.
pub mod commands;
pub mod config;
mod event;
mod fsutil;
mod guard;
pub mod inspect;
pub mod phases;
mod policy;
pub mod report;
pub mod run;
pub mod runtime;
pub mod setup;
mod spec;
pub mod supervisor;
pub mod sys;
mod traps;
pub mod vocab;

/// Entries for the fuzz targets (`fuzz/fuzz_targets/`) into modules that are not public.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::event::fuzz_cuts as event_cuts;
}
