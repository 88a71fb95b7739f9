//! Findings: what a loader run or a foreign interpreter is judged to be, and the loader's
//! arguments read by the rules of its kind and version.

use super::file::LoaderKind;
use super::loader_args::{self, LoaderEnv, LoaderInvocation};
use super::{Argv, Finding, LoaderFinding, Resolved, Via};
use crate::vocab::Rule;

/// A binary whose `PT_INTERP` (`interp`, found at `shown`) is not one of the container's own
/// loaders; `loader` says what kind of loader it is, if it is one.
pub(crate) fn custom_interpreter(
    interp: &[u8],
    shown: &str,
    loader: Option<LoaderKind>,
    program: &[u8],
) -> Finding {
    let named = crate::event::lossy(interp);
    let reason = match loader {
        Some(kind) => format!(
            "PT_INTERP names {named} ({shown}), a {} loader that is not one of the container's own",
            kind.as_str()
        ),
        None => format!("PT_INTERP names {named} ({shown}), which is not a loader"),
    };
    Finding {
        rule: Rule::CustomInterpreter,
        reason,
        loader: loader.map(|kind| LoaderFinding {
            path: interp.to_vec(),
            kind,
            invocation: LoaderInvocation {
                mode: loader_args::LoaderMode::Run,
                program: Some(program.to_vec()),
                options: Vec::new(),
                audit: false,
                unknown_option: false,
            },
            via: Via::PtInterp,
        }),
    }
}

/// [`parse_loader_args`] at the image checkpoint, where a glibc loader has set up its thread
/// pointer. Its version is not guessed from its bytes (a copy can carry any): its argv is read
/// by the rules of 2.33 and later and by those before (where a query option it did not have
/// yet is the program's name), and the reading in which code runs wins. A 2.33+ loader asked a
/// query ends before this point, so a legitimate query never gets here.
pub(crate) fn parse_loader_args_at_image(
    kind: LoaderKind,
    argv: &Argv,
    env: LoaderEnv,
) -> LoaderInvocation {
    let inv = parse_loader_args(kind, argv, env);
    if kind == LoaderKind::Glibc && !inv.runs_foreign_code() {
        let old = with_cut_argv(argv, loader_args::parse_glibc_before_2_33(&argv.items, env));
        if old.runs_foreign_code() {
            return old;
        }
    }
    inv
}

/// Parses a loader's argv; when argv was cut short and no program was found in what was read,
/// one may hide beyond it, so a program is assumed (the safe reading).
pub(super) fn parse_loader_args(kind: LoaderKind, argv: &Argv, env: LoaderEnv) -> LoaderInvocation {
    with_cut_argv(argv, loader_args::parse(kind, &argv.items, env))
}

/// `inv`, with a program assumed beyond the arguments read when argv was cut short and none
/// was found in them.
pub(super) fn with_cut_argv(argv: &Argv, inv: LoaderInvocation) -> LoaderInvocation {
    let mut inv = inv;
    if argv.truncated && inv.program.is_none() {
        inv.mode = loader_args::LoaderMode::Run;
        inv.unknown_option = true;
        inv.program = Some(b"(beyond the arguments read)".to_vec());
    }
    inv
}

pub(crate) fn loader_finding(
    loader: &Resolved,
    kind: LoaderKind,
    invocation: LoaderInvocation,
    via: Via,
) -> Finding {
    let shown = crate::event::lossy(&loader.display);
    let (rule, reason) = if invocation.runs_foreign_code() {
        let program = crate::event::lossy(invocation.program.as_deref().unwrap_or_default());
        if loader.is_fileless() {
            (
                Rule::FilelessLoaderExecution,
                format!(
                    "a {} loader with no file behind it ({shown}) runs {program}",
                    kind.as_str()
                ),
            )
        } else if invocation.mode == loader_args::LoaderMode::Run {
            (
                Rule::BinaryExecutedByLoader,
                format!("the {} loader {shown} runs {program}", kind.as_str()),
            )
        } else {
            (
                Rule::BinaryExecutedByLoader,
                format!(
                    "the {} loader {shown} loads audit modules while it {}s {program}",
                    kind.as_str(),
                    invocation.mode.as_str()
                ),
            )
        }
    } else {
        (
            Rule::LoaderQuery,
            format!(
                "the {} loader {shown} runs in {} mode; no program runs",
                kind.as_str(),
                invocation.mode.as_str()
            ),
        )
    };
    Finding {
        rule,
        reason,
        loader: Some(LoaderFinding {
            path: loader.display.clone(),
            kind,
            invocation,
            via,
        }),
    }
}
