//! runc's ContainerProcessState message, on hostile bytes.
#![no_main]
use execguard::supervisor::state::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse(data);
});
