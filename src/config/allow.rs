//! `[[allow]]` entries of the config: exceptions for known, legitimate loader runs, checked
//! when the config is loaded (what they match at run time: `crate::policy::allow` and
//! `crate::inspect::allow`).

use std::collections::BTreeMap;

use serde::Deserialize;

/// Directories a build container can usually write to (scratch space, homes, CI workspaces):
/// an `[[allow]]` program under one of them is refused when the config is loaded.
pub(crate) const WRITABLE_DIRS: &[&str] = &[
    "/tmp",
    "/var/tmp",
    "/dev",
    "/proc",
    "/sys",
    "/run",
    "/var/run",
    "/home",
    "/root",
    "/builds",
    "/github",
    "/__w",
    "/workspace",
];

/// Loader options that load other code into the program: never part of an exception.
const CODE_LOADING_OPTIONS: &[&str] = &["--preload", "--audit"];

/// One `[[allow]]` entry: a known, legitimate loader use (a vendor toolchain's
/// `ld.so --library-path DIR PROGRAM` wrapper) that enforce mode lets run. It matches what a
/// container cannot forge: the file the loader actually mapped, which must be one the running
/// process cannot write, named by its path and/or its content, with exactly these loader
/// options. See `config/execguard.toml` for every key.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "RawAllowRule")]
pub(crate) struct AllowRule {
    /// Named in events (`allow_rule`) and by `explain`.
    pub(crate) name: String,
    /// The program exactly as the loader is given it: an absolute, normalised path inside the
    /// container, under none of [`WRITABLE_DIRS`].
    pub(crate) program: Option<String>,
    /// The program's content.
    pub(crate) sha256: Option<[u8; 32]>,
    /// The loader options before the program, exactly (values as separate items).
    pub(crate) options: Vec<String>,
    /// Only containers whose id matches this glob.
    pub(crate) container: Option<glob::Pattern>,
    /// Only containers that carry all of these annotations with these values.
    pub(crate) annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllowRule {
    name: String,
    #[serde(default)]
    program: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    options: Vec<String>,
    #[serde(default)]
    container: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

impl TryFrom<RawAllowRule> for AllowRule {
    type Error = String;

    fn try_from(raw: RawAllowRule) -> Result<Self, String> {
        let name = raw.name;
        let refuse = |why: String| Err(format!("[[allow]] {name:?}: {why}"));
        if name.is_empty() {
            return Err("[[allow]]: `name` is empty".to_owned());
        }
        if raw.program.is_none() && raw.sha256.is_none() {
            return refuse("needs `program` or `sha256` (or both)".to_owned());
        }
        if let Some(p) = &raw.program {
            if let Err(why) = check_allowed_program(p) {
                return refuse(format!("`program` {p:?} {why}"));
            }
        }
        let sha256 = match raw.sha256.as_deref().map(parse_sha256).transpose() {
            Ok(s) => s,
            Err(why) => return refuse(format!("`sha256` {why}")),
        };
        if let Some(o) = raw.options.iter().find(|o| {
            CODE_LOADING_OPTIONS
                .iter()
                .any(|c| o == c || o.strip_prefix(c).is_some_and(|v| v.starts_with('=')))
        }) {
            return refuse(format!(
                "option {o:?} loads other code into the program; an exception cannot include it"
            ));
        }
        let container = match raw.container.as_deref().map(glob::Pattern::new).transpose() {
            Ok(c) => c,
            Err(e) => return refuse(format!("`container` is not a glob pattern: {e}")),
        };
        Ok(AllowRule {
            name,
            program: raw.program,
            sha256,
            options: raw.options,
            container,
            annotations: raw.annotations,
        })
    }
}

/// Why an `[[allow]]` program path is refused, if it is: it must name one file, the same one
/// in every container, in a place the container is not expected to write.
fn check_allowed_program(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(
            "is not an absolute path (the loader resolves a relative one against the \
                    working directory, which the build chooses)"
                .to_owned(),
        );
    }
    if p.ends_with('/')
        || p[1..]
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("is not a normalised path (no `.`, `..`, `//` or trailing `/`)".to_owned());
    }
    if let Some(dir) = WRITABLE_DIRS
        .iter()
        .find(|d| p.strip_prefix(*d).is_some_and(|rest| rest.starts_with('/')))
    {
        return Err(format!(
            "is under {dir}, which a build container can write: anything could be put there"
        ));
    }
    Ok(())
}

fn parse_sha256(s: &str) -> Result<[u8; 32], String> {
    let bad = || format!("{s:?} is not 64 hexadecimal digits");
    if s.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte =
            u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigError};
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/x.toml"))
    }

    #[test]
    fn allow_rules_parse() {
        let c = parse(
            "[[allow]]\nname = \"vendor\"\nprogram = \"/opt/vendor/bin/cc\"\noptions = [\"--library-path\", \"/opt/vendor/lib\"]\ncontainer = \"ci-*\"\nannotations = { \"team\" = \"infra\" }\n\n[[allow]]\nname = \"by-content\"\nsha256 = \"00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF\"\n",
        )
        .unwrap();
        assert_eq!(c.allow.len(), 2);
        let v = &c.allow[0];
        assert_eq!(v.program.as_deref(), Some("/opt/vendor/bin/cc"));
        assert_eq!(v.options, ["--library-path", "/opt/vendor/lib"]);
        assert!(v.container.as_ref().unwrap().matches("ci-42"));
        assert_eq!(v.annotations["team"], "infra");
        let h = c.allow[1].sha256.unwrap();
        assert_eq!((h[0], h[1], h[31]), (0x00, 0x11, 0xff));
    }

    /// A rule that could exempt something the container can write, or load extra code, is
    /// refused with the file, the line of the rule and the reason.
    #[test]
    fn unsafe_allow_rules_are_refused_with_file_line_and_reason() {
        let cases = [
            ("program = \"/tmp/tool\"", "under /tmp"),
            ("program = \"/home/ci/tool\"", "under /home"),
            ("program = \"tool\"", "not an absolute path"),
            ("program = \"/opt/../tmp/tool\"", "not a normalised path"),
            ("program = \"/opt//tool\"", "not a normalised path"),
            ("sha256 = \"abc\"", "64 hexadecimal digits"),
            (
                "program = \"/opt/t\"\noptions = [\"--preload\", \"/opt/x.so\"]",
                "loads other code",
            ),
            (
                "program = \"/opt/t\"\noptions = [\"--audit=/a.so\"]",
                "loads other code",
            ),
            ("program = \"/opt/t\"\ncontainer = \"[\"", "not a glob"),
            ("", "needs `program` or `sha256`"),
            (
                "program = \"/opt/t\"\npath = \"/x\"",
                "unknown field `path`",
            ),
        ];
        for (body, why) in cases {
            let text = format!("mode = \"enforce\"\n\n[[allow]]\nname = \"r\"\n{body}\n");
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains("/etc/x.toml"), "{body}: {err}");
            assert!(err.contains(why), "{body}: {err}");
            assert!(
                ["line 3", "line 4", "line 5", "line 6"]
                    .iter()
                    .any(|l| err.contains(l)),
                "{body}: {err}"
            );
        }
        let dup = "[[allow]]\nname = \"r\"\nprogram = \"/opt/a\"\n[[allow]]\nname = \"r\"\nprogram = \"/opt/b\"\n";
        assert!(parse(dup)
            .unwrap_err()
            .to_string()
            .contains("used by an earlier rule"));
        // A directory merely named like a writable one is fine.
        assert!(parse("[[allow]]\nname = \"r\"\nprogram = \"/tmpfoo/t\"\n").is_ok());
    }
}
