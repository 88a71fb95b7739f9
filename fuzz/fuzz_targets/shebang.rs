//! `#!` line parsing, on hostile script heads.
#![no_main]
use execguard::inspect::file::parse_shebang;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(s) = parse_shebang(data) {
        assert!(!s.interpreter.is_empty());
        assert!(!s.interpreter.contains(&b'\n'));
    }
});
