//! The supervisor: two processes. `execguard supervise` is the keeper ([`keeper`]): it owns
//! the runtimes' socket and a copy of every notify fd, and runs the worker (`execguard worker`,
//! [`worker`]), which answers every exec of every guarded container after inspecting it.
//!
//! The two halves share only what both ends of their channel must agree on: the slot file
//! ([`slots`]), runc's state message ([`state`]), the exec record ([`record`]), privilege
//! reduction ([`privilege`]), the signals ([`signals`]) and root-only sockets ([`socket`]).
//! Neither imports the other; no module of this tree imports one that imports it back
//! (`tests/integration/layout.rs` checks).

pub(crate) mod error;
pub mod fault;
pub(crate) mod features;
pub(crate) mod keeper;
pub(crate) mod privilege;
pub(crate) mod record;
pub(crate) mod signals;
pub(crate) mod slots;
mod socket;
pub mod state;
pub(crate) mod stats;
pub(crate) mod worker;

pub use worker::{control, cpugroup};

pub(crate) use features::kernel_features;
pub(crate) use worker::tell::wait_written as wait_told_lines_written;
pub(crate) use worker::{run_worker, serve_in_process};
