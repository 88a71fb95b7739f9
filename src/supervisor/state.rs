//! The message runc sends to `linux.seccomp.listenerPath`: a `ContainerProcessState` JSON with
//! the notify fd attached (`SCM_RIGHTS`). Read with a size cap and a deadline.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde::Deserialize;

/// Larger state messages are refused: runc's are a few KiB (annotations included), and the
/// keeper hands each to its worker as one datagram.
pub(crate) const MAX_STATE_BYTES: usize = 128 << 10;
/// How long a connecting runtime may take to send its message.
pub(crate) const READ_DEADLINE: Duration = Duration::from_secs(5);
/// At most this many fds are accepted with one message (runc sends one).
const MAX_FDS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("receiving the container state: {0}")]
    Receive(#[source] nix::Error),
    #[error("setting a read deadline on the connection: {0}")]
    Deadline(#[source] std::io::Error),
    /// The peer connected and closed without a word: the hook's or the wrapper's check that
    /// the supervisor is listening.
    #[error("connection closed without a message")]
    Empty,
    #[error("container state message is larger than {MAX_STATE_BYTES} bytes")]
    TooLarge,
    #[error("container state is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("container state names fds {names:?} but carries {received} fd(s)")]
    NoSeccompFd { names: Vec<String>, received: usize },
}

/// runc's `specs.ContainerProcessState`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ContainerProcessState {
    #[serde(rename = "ociVersion", default)]
    pub(crate) oci_version: String,
    #[serde(default)]
    pub(crate) fds: Vec<String>,
    #[serde(default)]
    pub(crate) pid: i64,
    #[serde(default)]
    pub(crate) metadata: String,
    pub(crate) state: ContainerState,
}

/// The container part of it (`specs.State`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub(crate) struct ContainerState {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) status: String,
    #[serde(default)]
    pub(crate) pid: i64,
    #[serde(default)]
    pub(crate) bundle: String,
    #[serde(default)]
    pub(crate) annotations: HashMap<String, String>,
}

/// Parses the JSON part (also the fuzz entry point).
pub fn parse(bytes: &[u8]) -> Result<ContainerProcessState, StateError> {
    if bytes.len() > MAX_STATE_BYTES {
        return Err(StateError::TooLarge);
    }
    Ok(serde_json::from_slice(bytes)?)
}

/// Reads one message from a freshly accepted connection: the state (raw and parsed) and its
/// seccomp fd.
pub(crate) fn receive(
    stream: &UnixStream,
) -> Result<(Vec<u8>, ContainerProcessState, OwnedFd), StateError> {
    stream
        .set_read_timeout(Some(READ_DEADLINE))
        .map_err(StateError::Deadline)?;
    let mut data = Vec::new();
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let (n, received) = crate::sys::recv_with_fds::<MAX_FDS>(stream.as_fd(), &mut chunk)
            .map_err(StateError::Receive)?;
        fds.extend(received);
        if n == 0 {
            break;
        }
        if data.len() + n > MAX_STATE_BYTES {
            return Err(StateError::TooLarge);
        }
        data.extend_from_slice(&chunk[..n]);
        // runc sends the whole message in one sendmsg; stop as soon as it parses.
        if serde_json::from_slice::<serde::de::IgnoredAny>(&data).is_ok() {
            break;
        }
    }
    if data.is_empty() && fds.is_empty() {
        return Err(StateError::Empty);
    }
    let state = parse(&data)?;
    let index = state.fds.iter().position(|n| n == "seccompFd");
    match index {
        Some(i) if i < fds.len() => {
            let fd = fds.swap_remove(i);
            Ok((data, state, fd))
        }
        _ => Err(StateError::NoSeccompFd {
            names: state.fds.clone(),
            received: fds.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_runcs_message() {
        let msg = br#"{"ociVersion":"1.0.2-dev","fds":["seccompFd"],"pid":4242,"metadata":"execguard/1 created=1 trapped=execve,execveat","state":{"ociVersion":"1.0.2-dev","id":"c1","status":"creating","pid":4242,"bundle":"/b","annotations":{"execguard.io/mode":"enforce"}}}"#;
        let s = parse(msg).unwrap();
        assert_eq!(s.state.id, "c1");
        assert_eq!(s.pid, 4242);
        assert_eq!(s.state.annotations["execguard.io/mode"], "enforce");
    }

    #[test]
    fn refuses_garbage_and_huge_messages() {
        assert!(parse(b"{").is_err());
        assert!(parse(br#"{"state":{}}"#).is_err());
        let huge = vec![b' '; MAX_STATE_BYTES + 1];
        assert!(matches!(parse(&huge), Err(StateError::TooLarge)));
    }
}
