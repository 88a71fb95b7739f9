//! Sockets only root may use: the runtimes' socket (the keeper's) and the control socket (the
//! worker's).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use super::error::SupervisorError;

/// What [`bind_root_only`] does with a socket file that is already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Existing {
    /// Refuse if something listens on it (another supervisor); replace a stale file.
    RefuseLive,
    /// Replace it: the socket belongs to this keeper's workers, and a new worker takes over.
    Replace,
}

/// Binds a unix socket that only root may use: mode 0600 on the file, and every connection
/// checked by [`peer_is_root`].
pub(super) fn bind_root_only(
    path: &Path,
    existing: Existing,
) -> Result<UnixListener, SupervisorError> {
    let err = |source| SupervisorError::Socket {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if path.exists() {
        if existing == Existing::RefuseLive && UnixStream::connect(path).is_ok() {
            return Err(SupervisorError::SocketInUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

/// Whether the peer of a connection to `socket` runs as root; a refusal is logged with the
/// peer's uid and pid.
pub(super) fn peer_is_root(stream: &UnixStream, socket: &'static str) -> bool {
    match getsockopt(stream, PeerCredentials) {
        Ok(cred) if cred.uid() == 0 => true,
        Ok(cred) => {
            tracing::warn!(
                socket,
                uid = cred.uid(),
                pid = cred.pid(),
                "refused a non-root peer"
            );
            false
        }
        Err(e) => {
            tracing::warn!(socket, error = %e, "cannot read peer credentials; refused");
            false
        }
    }
}
