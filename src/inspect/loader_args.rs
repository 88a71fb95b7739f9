//! What a loader will do with the arguments it is given: which program it loads, and whether it
//! runs it or only answers a question. Follows glibc's `rtld.c` (2.36) and musl's `dynlink.c`,
//! leaning to "a program runs" wherever the two could be read differently.

use super::file::LoaderKind;

/// What the loader does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoaderMode {
    /// Loads and runs the program.
    Run,
    /// `--list`, `ldd`, `LD_TRACE_LOADED_OBJECTS`: prints dependencies, does not run it.
    List,
    /// `--verify`: checks that the program is loadable.
    Verify,
    Help,
    Version,
    ListTunables,
    ListDiagnostics,
}

impl LoaderMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LoaderMode::Run => "run",
            LoaderMode::List => "list",
            LoaderMode::Verify => "verify",
            LoaderMode::Help => "help",
            LoaderMode::Version => "version",
            LoaderMode::ListTunables => "list-tunables",
            LoaderMode::ListDiagnostics => "list-diagnostics",
        }
    }
}

/// Environment settings that change what a loader does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoaderEnv {
    /// `LD_TRACE_LOADED_OBJECTS` is set (glibc: list mode, what `ldd` uses).
    pub trace: bool,
    /// `LD_AUDIT` is set: audit modules run code in every mode that loads objects. Also set
    /// when the environment could not be read whole: what was not read may hold it, so the
    /// run is judged as if it did, never as clean.
    pub audit: bool,
}

impl LoaderEnv {
    /// Bytes of an environment entry that [`LoaderEnv::note`] needs: the name, `=`, and
    /// whether a value follows.
    pub(crate) const ENTRY_PREFIX_BYTES: usize = 32;

    /// Notes one `NAME=value` entry (its first [`LoaderEnv::ENTRY_PREFIX_BYTES`] are enough).
    pub(crate) fn note(&mut self, entry: &[u8]) {
        if entry.starts_with(b"LD_TRACE_LOADED_OBJECTS=") {
            self.trace = true;
        } else if entry.starts_with(b"LD_AUDIT=") && entry.len() > b"LD_AUDIT=".len() {
            self.audit = true;
        }
    }

    /// The environment was cut before its end (more entries or bytes than are read): judged as
    /// if the rest held `LD_AUDIT`.
    pub(crate) fn note_cut(&mut self) {
        self.audit = true;
    }

    /// The settings of a whole environment.
    pub(crate) fn scan<'a>(entries: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut env = Self::default();
        for e in entries {
            env.note(e);
        }
        env
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoaderInvocation {
    pub mode: LoaderMode,
    /// The program the loader loads (its argument as given), if any.
    pub program: Option<Vec<u8>>,
    /// The options before the program, each as given (values included).
    pub options: Vec<Vec<u8>>,
    /// An audit module is loaded (`--audit` or `LD_AUDIT`).
    pub audit: bool,
    /// An option this parser does not know came before the program.
    pub(crate) unknown_option: bool,
}

impl LoaderInvocation {
    /// Before any argument is read: run mode, no program, no option.
    fn nothing_yet(audit: bool) -> Self {
        Self {
            mode: LoaderMode::Run,
            program: None,
            options: Vec::new(),
            audit,
            unknown_option: false,
        }
    }

    /// Whether the loader loads the program's objects without running it (list or verify
    /// mode) with no audit module named yet: where one named by the program itself
    /// (`DT_AUDIT`, `DT_DEPAUDIT`) would make it run foreign code.
    pub(crate) fn may_load_audit_modules(&self) -> bool {
        self.program.is_some()
            && !self.audit
            && matches!(self.mode, LoaderMode::List | LoaderMode::Verify)
    }

    /// Whether code other than the loader's own runs: the program (run mode), or audit
    /// modules (which glibc loads before it lists or verifies anything). An unknown option
    /// makes any mode suspect: a newer loader may read it differently.
    pub fn runs_foreign_code(&self) -> bool {
        let loads = matches!(
            self.mode,
            LoaderMode::Run | LoaderMode::List | LoaderMode::Verify
        );
        self.program.is_some()
            && (self.mode == LoaderMode::Run || self.unknown_option || (loads && self.audit))
    }
}

/// glibc options that take the next argument as their value.
const GLIBC_VALUE_OPTIONS: &[&[u8]] = &[
    b"--library-path",
    b"--inhibit-rpath",
    b"--audit",
    b"--preload",
    b"--argv0",
    b"--glibc-hwcaps-prepend",
    b"--glibc-hwcaps-mask",
];

/// musl options (after "--") that take a value, as the next argument or after "=".
const MUSL_VALUE_OPTIONS: &[&[u8]] = &[b"library-path", b"preload", b"argv0"];

/// Parses `argv` (argv[0] is the loader itself) for a loader of `kind`.
pub fn parse(kind: LoaderKind, argv: &[Vec<u8>], env: LoaderEnv) -> LoaderInvocation {
    match kind {
        LoaderKind::Glibc => parse_glibc(argv, env),
        LoaderKind::Musl => parse_musl(argv),
    }
}

fn parse_glibc(argv: &[Vec<u8>], env: LoaderEnv) -> LoaderInvocation {
    let mut inv = LoaderInvocation::nothing_yet(env.audit);
    let mut i = 1;
    // glibc stops at the first argument that does not start with "--"; --version and an
    // unknown option end the loader at once, so nothing after them is loaded.
    let mut stopped = false;
    while i < argv.len() && argv[i].starts_with(b"--") {
        let a = argv[i].as_slice();
        if GLIBC_VALUE_OPTIONS.contains(&a) {
            let Some(value) = argv.get(i + 1) else {
                // "--audit" as the last argument: glibc prints its usage and exits.
                stopped = true;
                break;
            };
            if a == b"--audit" {
                inv.audit = true;
            }
            inv.options.push(a.to_vec());
            inv.options.push(value.clone());
            i += 2;
            continue;
        }
        inv.options.push(a.to_vec());
        i += 1;
        match a {
            b"--list" => inv.mode = LoaderMode::List,
            b"--verify" => inv.mode = LoaderMode::Verify,
            b"--inhibit-cache" => {}
            b"--help" => inv.mode = LoaderMode::Help,
            b"--list-tunables" => inv.mode = LoaderMode::ListTunables,
            b"--list-diagnostics" => inv.mode = LoaderMode::ListDiagnostics,
            b"--version" => {
                inv.mode = LoaderMode::Version;
                stopped = true;
                break;
            }
            // glibc 2.36 rejects any other "--..." with a usage message. A later glibc may
            // accept it, possibly with a value: keep reading, so that whatever follows is
            // taken as the program, the safe reading.
            _ => inv.unknown_option = true,
        }
    }
    if !stopped && inv.mode == LoaderMode::Run && env.trace {
        inv.mode = LoaderMode::List;
    }
    if !stopped {
        inv.program = argv.get(i).cloned();
    }
    if matches!(
        inv.mode,
        LoaderMode::Help
            | LoaderMode::Version
            | LoaderMode::ListTunables
            | LoaderMode::ListDiagnostics
    ) && !inv.unknown_option
    {
        // These modes print and exit before any object is loaded.
        inv.program = None;
    }
    inv
}

/// glibc's options before 2.33 (`rtld.c` of 2.28 to 2.32): these flags and value options, and
/// nothing else. The loop stops at the first other argument, which is the program, also when
/// it starts with "--". (2.28 has no `--preload` either; taking it as an option here only
/// moves which argument is named as the program, not whether one runs.)
const GLIBC_OLD_FLAGS: &[&[u8]] = &[b"--list", b"--verify", b"--inhibit-cache"];
const GLIBC_OLD_VALUE_OPTIONS: &[&[u8]] = &[
    b"--library-path",
    b"--inhibit-rpath",
    b"--audit",
    b"--preload",
];

/// Modes a glibc loader of 2.33 or later ends in before it sets up its thread pointer (it
/// prints and exits): a loader seen at the image checkpoint cannot be in one of them.
#[cfg(test)]
pub(crate) fn exits_before_tls(mode: LoaderMode) -> bool {
    matches!(
        mode,
        LoaderMode::Help
            | LoaderMode::Version
            | LoaderMode::ListTunables
            | LoaderMode::ListDiagnostics
    )
}

/// `argv` read as a glibc loader before 2.33 reads it: a query option it did not have yet is
/// the program's name (without a slash, 2.31 looks it up in the loader cache, which a
/// container's root can write). Read at the image checkpoint beside the current rules, and at
/// the exec checkpoint for a loader without 2.33's options.
pub fn parse_glibc_before_2_33(argv: &[Vec<u8>], env: LoaderEnv) -> LoaderInvocation {
    let mut inv = LoaderInvocation::nothing_yet(env.audit);
    let mut i = 1;
    while i < argv.len() {
        let a = argv[i].as_slice();
        if GLIBC_OLD_FLAGS.contains(&a) {
            match a {
                b"--list" => inv.mode = LoaderMode::List,
                b"--verify" => inv.mode = LoaderMode::Verify,
                _ => {}
            }
            inv.options.push(a.to_vec());
            i += 1;
        } else if GLIBC_OLD_VALUE_OPTIONS.contains(&a) && i + 1 < argv.len() {
            if a == b"--audit" {
                inv.audit = true;
            }
            inv.options.push(a.to_vec());
            inv.options.push(argv[i + 1].clone());
            i += 2;
        } else {
            break;
        }
    }
    if inv.mode == LoaderMode::Run && env.trace {
        inv.mode = LoaderMode::List;
    }
    inv.program = argv.get(i).cloned();
    inv.unknown_option = inv.program.as_deref().is_some_and(|p| p.starts_with(b"--"));
    inv
}

fn parse_musl(argv: &[Vec<u8>]) -> LoaderInvocation {
    let mut inv = LoaderInvocation::nothing_yet(false);
    // musl's libc.so acts as ldd when it is run under a name ending in "ldd".
    if argv.first().is_some_and(|a0| a0.ends_with(b"ldd")) {
        inv.mode = LoaderMode::List;
    }
    let mut i = 1;
    while i < argv.len() && argv[i].starts_with(b"--") {
        let a = argv[i].clone();
        i += 1;
        let opt = &a[2..];
        if opt.is_empty() {
            break;
        }
        inv.options.push(a.clone());
        if opt == b"list" {
            inv.mode = LoaderMode::List;
            continue;
        }
        let takes_value = MUSL_VALUE_OPTIONS.iter().find(|name| opt.starts_with(name));
        match takes_value {
            Some(name) if opt.len() == name.len() => {
                if let Some(v) = argv.get(i) {
                    inv.options.push(v.clone());
                    i += 1;
                }
            }
            // "--preload=LIB" carries its value; "--preloadX" is ignored by musl.
            Some(_) => {}
            None => inv.unknown_option = true,
        }
    }
    inv.program = argv.get(i).cloned();
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    fn glibc(list: &[&str]) -> LoaderInvocation {
        parse(LoaderKind::Glibc, &args(list), LoaderEnv::default())
    }

    #[test]
    fn plain_run() {
        let inv = glibc(&["ld.so", "/bin/touch", "x"]);
        assert_eq!(inv.mode, LoaderMode::Run);
        assert_eq!(inv.program.as_deref(), Some(&b"/bin/touch"[..]));
        assert!(inv.runs_foreign_code());
    }

    #[test]
    fn every_value_option_is_skipped() {
        for opt in [
            "--library-path",
            "--inhibit-rpath",
            "--audit",
            "--preload",
            "--argv0",
            "--glibc-hwcaps-prepend",
            "--glibc-hwcaps-mask",
        ] {
            let inv = glibc(&["ld.so", opt, "/v", "--inhibit-cache", "/tmp/p", "a"]);
            assert_eq!(inv.program.as_deref(), Some(&b"/tmp/p"[..]), "{opt}");
            assert!(inv.runs_foreign_code(), "{opt}");
        }
    }

    #[test]
    fn queries_do_not_run_the_program() {
        for (opt, mode) in [
            ("--list", LoaderMode::List),
            ("--verify", LoaderMode::Verify),
            ("--help", LoaderMode::Help),
            ("--version", LoaderMode::Version),
            ("--list-tunables", LoaderMode::ListTunables),
            ("--list-diagnostics", LoaderMode::ListDiagnostics),
        ] {
            let inv = glibc(&["ld.so", opt, "/bin/true"]);
            assert_eq!(inv.mode, mode, "{opt}");
            assert!(!inv.runs_foreign_code(), "{opt}");
        }
        let ldd = parse(
            LoaderKind::Glibc,
            &args(&["ld.so", "/bin/true"]),
            LoaderEnv {
                trace: true,
                audit: false,
            },
        );
        assert_eq!(ldd.mode, LoaderMode::List);
        assert!(!ldd.runs_foreign_code());
        assert!(!glibc(&["ld.so"]).runs_foreign_code());
    }

    #[test]
    fn audit_runs_code_even_when_listing() {
        let inv = glibc(&["ld.so", "--list", "--audit", "/tmp/a.so", "/bin/true"]);
        assert!(inv.runs_foreign_code());
        let env = LoaderEnv {
            trace: true,
            audit: true,
        };
        assert!(parse(LoaderKind::Glibc, &args(&["ld.so", "/bin/true"]), env).runs_foreign_code());
    }

    #[test]
    fn unknown_options_lean_to_a_program() {
        let inv = glibc(&["ld.so", "--future-option", "/tmp/p"]);
        assert!(inv.unknown_option);
        assert!(inv.runs_foreign_code());
        // --help then an unknown option: treated as possibly running.
        assert!(glibc(&["ld.so", "--help", "--x", "/tmp/p"]).runs_foreign_code());
    }

    /// Before 2.33, glibc takes a query option it did not have yet as the program's name.
    #[test]
    fn an_old_glibc_runs_what_a_new_one_would_only_describe() {
        let old = |list: &[&str]| parse_glibc_before_2_33(&args(list), LoaderEnv::default());
        for opt in [
            "--help",
            "--version",
            "--list-tunables",
            "--list-diagnostics",
            "--argv0",
        ] {
            let new = glibc(&["ld.so", "--library-path", "/tmp", opt, "x"]);
            let inv = old(&["ld.so", "--library-path", "/tmp", opt, "x"]);
            assert_eq!(inv.mode, LoaderMode::Run, "{opt}");
            assert_eq!(inv.program.as_deref(), Some(opt.as_bytes()), "{opt}");
            assert!(inv.runs_foreign_code(), "{opt}");
            if opt != "--argv0" {
                assert!(exits_before_tls(new.mode), "{opt}");
            }
        }
        // What the old loader knew it reads as before.
        let inv = old(&["ld.so", "--list", "--audit", "/a.so", "/bin/true"]);
        assert_eq!(inv.mode, LoaderMode::List);
        assert!(inv.audit && inv.runs_foreign_code());
        assert_eq!(
            old(&["ld.so", "--verify", "/bin/true"]).mode,
            LoaderMode::Verify
        );
        // A value option as the last argument is the program.
        assert_eq!(
            old(&["ld.so", "--library-path"]).program.as_deref(),
            Some(&b"--library-path"[..])
        );
    }

    #[test]
    fn musl_options_and_ldd_name() {
        let m = |l: &[&str]| parse(LoaderKind::Musl, &args(l), LoaderEnv::default());
        let inv = m(&[
            "ld-musl",
            "--library-path",
            "/l",
            "--preload=/x.so",
            "--",
            "/p",
            "a",
        ]);
        assert_eq!(inv.program.as_deref(), Some(&b"/p"[..]));
        assert!(inv.runs_foreign_code());
        assert_eq!(m(&["ld-musl", "--list", "/p"]).mode, LoaderMode::List);
        assert!(!m(&["/usr/bin/ldd", "/p"]).runs_foreign_code());
        assert!(!m(&["ld-musl"]).runs_foreign_code());
    }
}
