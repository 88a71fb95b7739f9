//! `execguard report`'s reader and every rendering, on hostile event files.
#![no_main]
use execguard::report::read_and_render;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = read_and_render(data);
});
