//! The cuts of hostile events: a line written whole within its cap, a folded event kept small.
#![no_main]
use execguard::fuzzing::event_cuts;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    event_cuts(data);
});
