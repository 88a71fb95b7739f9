//! `[[allow]]` exceptions, the part without I/O: which rules apply to a container, and which
//! could exempt a loader invocation before any file is looked at. Whether one does is decided
//! at the image checkpoint, on the file the loader mapped ([`crate::inspect::allow`]).

use std::collections::HashMap;

use super::Settings;
use crate::config::AllowRule;
use crate::inspect::loader_args::{LoaderInvocation, LoaderMode};
use crate::inspect::Finding;
use crate::vocab::Rule;

/// The rules that apply to the container with this id and these annotations.
pub(crate) fn for_container(
    rules: &[AllowRule],
    id: &str,
    annotations: &HashMap<String, String>,
) -> Vec<AllowRule> {
    rules
        .iter()
        .filter(|r| r.container.as_ref().is_none_or(|p| p.matches(id)))
        .filter(|r| {
            r.annotations
                .iter()
                .all(|(k, v)| annotations.get(k) == Some(v))
        })
        .cloned()
        .collect()
}

/// Whether an `[[allow]]` rule could exempt this finding: a loader that runs a program, with
/// the options and program a rule names. The image checkpoint then decides, on the file the
/// loader mapped.
pub(crate) fn may_exempt(f: &Finding, s: &Settings) -> bool {
    f.rule == Rule::BinaryExecutedByLoader
        && f.loader
            .as_ref()
            .is_some_and(|l| candidates(&s.allow, &l.invocation).next().is_some())
}

/// The rules that could exempt `inv`: a loader that runs a program (no audit module, no option
/// this parser does not know) with exactly a rule's options and, where the rule names its
/// program, that program exactly as given.
pub(crate) fn candidates<'a>(
    rules: &'a [AllowRule],
    inv: &'a LoaderInvocation,
) -> impl Iterator<Item = &'a AllowRule> + 'a {
    let eligible = inv.mode == LoaderMode::Run && !inv.audit && !inv.unknown_option;
    let program = inv.program.as_deref().filter(|_| eligible);
    rules.iter().filter(move |r| {
        program.is_some()
            && r.options.len() == inv.options.len()
            && r.options
                .iter()
                .zip(&inv.options)
                .all(|(want, given)| want.as_bytes() == given.as_slice())
            && r.program
                .as_ref()
                .is_none_or(|p| Some(p.as_bytes()) == program)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn rules(text: &str) -> Vec<AllowRule> {
        crate::config::Config::parse(text, Path::new("t.toml"))
            .unwrap()
            .allow
    }

    fn run(args: &[&str]) -> LoaderInvocation {
        let argv: Vec<Vec<u8>> = std::iter::once("/lib64/ld-linux-x86-64.so.2")
            .chain(args.iter().copied())
            .map(|a| a.as_bytes().to_vec())
            .collect();
        crate::inspect::loader_args::parse(
            crate::inspect::file::LoaderKind::Glibc,
            &argv,
            crate::inspect::loader_args::LoaderEnv::default(),
        )
    }

    fn names<'a>(rules: &'a [AllowRule], inv: &'a LoaderInvocation) -> Vec<&'a str> {
        candidates(rules, inv).map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn options_and_program_must_match_exactly() {
        let r = rules(
            "[[allow]]\nname = \"a\"\nprogram = \"/opt/v/tool\"\noptions = [\"--library-path\", \"/opt/v/lib\"]\n\
             [[allow]]\nname = \"b\"\nsha256 = \"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"\n",
        );
        let exact = run(&["--library-path", "/opt/v/lib", "/opt/v/tool", "x"]);
        assert_eq!(names(&r, &exact), ["a"]);
        // b takes no options: only a bare invocation, of any program (its content decides).
        assert_eq!(names(&r, &run(&["/opt/v/tool"])), ["b"]);
        assert_eq!(names(&r, &run(&["./anything"])), ["b"]);
        for other in [
            run(&["--library-path", "/tmp", "/opt/v/tool"]),
            run(&["--library-path", "/opt/v/lib", "/opt/v/./tool"]),
            run(&[
                "--library-path",
                "/opt/v/lib",
                "--preload",
                "/x.so",
                "/opt/v/tool",
            ]),
            run(&["--library-path", "/opt/v/lib", "--list", "/opt/v/tool"]),
            run(&[
                "--library-path",
                "/opt/v/lib",
                "--frobnicate",
                "/opt/v/tool",
            ]),
            run(&["--library-path", "/opt/v/lib"]),
        ] {
            assert_eq!(names(&r, &other), Vec::<&str>::new(), "{other:?}");
        }
        let mut audited = exact.clone();
        audited.audit = true;
        assert_eq!(names(&r, &audited), Vec::<&str>::new());
    }

    #[test]
    fn rules_apply_by_container_id_and_annotations() {
        let r = rules(
            "[[allow]]\nname = \"all\"\nprogram = \"/opt/a\"\n\
             [[allow]]\nname = \"ci\"\nprogram = \"/opt/a\"\ncontainer = \"ci-*\"\n\
             [[allow]]\nname = \"team\"\nprogram = \"/opt/a\"\nannotations = { \"team\" = \"infra\" }\n",
        );
        let names = |id: &str, ann: &[(&str, &str)]| -> Vec<String> {
            let ann = ann
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            for_container(&r, id, &ann)
                .into_iter()
                .map(|r| r.name)
                .collect()
        };
        assert_eq!(names("build-1", &[]), ["all"]);
        assert_eq!(names("ci-7", &[]), ["all", "ci"]);
        assert_eq!(names("x", &[("team", "infra")]), ["all", "team"]);
        assert_eq!(names("x", &[("team", "web")]), ["all"]);
    }
}
