//! Whether sshd in a guest is up with the pinned host key, without logging in: how kilnd tells
//! that an instance (whose login key only its user holds) is running.

use std::net::{SocketAddr, TcpStream};

use ssh2::Session;

use super::{blocking, fingerprint, key_blob, GuestError, CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT_MS};

/// Connects to 127.0.0.1:`port` and completes the SSH handshake; Ok when the server's host key
/// is exactly `pinned` ("ssh-ed25519 AAAA...").
pub async fn host_key_matches(port: u16, pinned: &str) -> Result<(), GuestError> {
    let pinned = key_blob(pinned)?;
    blocking(move || pinned_session(port, &pinned).map(drop)).await
}

/// A TCP connection to 127.0.0.1:`port` and an SSH session over it whose server presented
/// exactly the host key `pinned` (a key blob); not logged in. Also returns a second handle on
/// the socket (to wait for readability).
pub(super) fn pinned_session(port: u16, pinned: &[u8]) -> Result<(Session, TcpStream), GuestError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let tcp = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|source| GuestError::Connect { port, source })?;
    let socket = tcp
        .try_clone()
        .map_err(|source| GuestError::Connect { port, source })?;
    let mut session = Session::new().map_err(|source| GuestError::Handshake { port, source })?;
    session.set_timeout(HANDSHAKE_TIMEOUT_MS);
    session.set_tcp_stream(tcp);
    session
        .handshake()
        .map_err(|source| GuestError::Handshake { port, source })?;
    let got = session
        .host_key()
        .map(|(blob, _)| blob.to_vec())
        .unwrap_or_default();
    if got != pinned {
        return Err(GuestError::HostKeyMismatch {
            port,
            expected: fingerprint(pinned),
            got: fingerprint(&got),
        });
    }
    Ok((session, socket))
}
