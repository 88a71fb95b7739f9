//! ELF headers, program headers, PT_INTERP, the dynamic section's audit tags and the loader
//! test, on hostile bytes.
#![no_main]
use execguard::inspect::file::{classify, names_audit_modules, parse_loader_kind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = classify(data);
    let _ = names_audit_modules(data);
    let _ = parse_loader_kind(data);
});
