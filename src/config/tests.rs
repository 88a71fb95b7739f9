//! Unit tests of `config/mod.rs`.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/x.toml"))
}

#[test]
fn empty_config_gives_documented_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
    assert_eq!(c.mode, Mode::Audit);
    assert_eq!(c.enforce.min_importance, Importance::Critical);
    assert_eq!(c.enforce.errno, Errno(libc::EACCES));
}

#[test]
fn shipped_config_parses_to_the_defaults() {
    let text = include_str!("../../config/execguard.toml");
    assert_eq!(parse(text).unwrap(), Config::default());
}

#[test]
fn full_config() {
    let c = parse(
        "socket = \"/run/x.sock\"\nmode = \"enforce\"\n[enforce]\nmin_importance = \"high\"\nerrno = \"EPERM\"\n[rules]\ncustom_interpreter = \"medium\"\n",
    )
    .unwrap();
    assert_eq!(c.mode, Mode::Enforce);
    assert_eq!(c.enforce.min_importance, Importance::High);
    assert_eq!(c.enforce.errno, Errno(libc::EPERM));
    assert_eq!(
        c.rules.importance(Rule::CustomInterpreter),
        Importance::Medium
    );
    assert_eq!(
        c.rules.importance(Rule::BinaryExecutedByLoader),
        Importance::Critical
    );
}

#[test]
fn unknown_key_names_file_key_and_line() {
    let err = parse("mode = \"audit\"\n[enforce]\nmin_importanse = \"high\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("/etc/x.toml"), "{err}");
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("min_importanse"), "{err}");
}

#[test]
fn bad_values_are_errors_with_line() {
    let err = parse("\nmode = \"enforcing\"\n").unwrap_err().to_string();
    assert!(err.contains("line 2") && err.contains("enforcing"), "{err}");
    let err = parse("[enforce]\nerrno = \"EWHAT\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2") && err.contains("EWHAT"), "{err}");
    let err = parse("[enforce]\nmin_importance = \"severe\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("severe"), "{err}");
    assert!(parse("mode = \"off\"\n").is_err());
    assert!(parse("socket = \"relative.sock\"\n").is_err());
    assert_eq!(
        parse("[worker]\nexec_record = \"off\"\n")
            .unwrap()
            .worker
            .exec_record,
        ExecRecordSetting::Off
    );
    let err = parse("[worker]\nexec_record = \"on\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2") && err.contains("on"), "{err}");
    let err = parse("[worker]\ncpu_cgroup = \"host\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2") && err.contains("host"), "{err}");
}
