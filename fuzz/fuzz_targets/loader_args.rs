//! Loader argv parsing (glibc and musl), on hostile argument vectors.
#![no_main]
use execguard::inspect::file::LoaderKind;
use execguard::inspect::loader_args::{parse, LoaderEnv};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let argv: Vec<Vec<u8>> = rest.split(|b| *b == 0).map(<[u8]>::to_vec).collect();
    let env = LoaderEnv {
        trace: flags & 1 != 0,
        audit: flags & 2 != 0,
    };
    let kind = if flags & 4 != 0 { LoaderKind::Musl } else { LoaderKind::Glibc };
    let inv = parse(kind, &argv, env);
    // A program, when found, is one of the arguments.
    if let Some(p) = &inv.program {
        assert!(argv.contains(p));
    }
    let _ = inv.runs_foreign_code();
});
