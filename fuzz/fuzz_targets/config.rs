//! The TOML config, on hostile text: errors, never panics, and every error names the file.
#![no_main]
use execguard::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::parse(text, std::path::Path::new("fuzz.toml")) {
        assert!(e.to_string().contains("fuzz.toml"));
    }
});
