//! systemd readiness (`Type=notify`): tells the service manager we listen.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `READY=1`) to $NOTIFY_SOCKET when systemd set it.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = UnixDatagram::unbound().and_then(|socket| {
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(state.as_bytes(), &address)
            }
            None => socket.send_to(state.as_bytes(), &path),
        }
    });
    if let Err(e) = result {
        log::warn!("cannot notify systemd ({state}): {e}");
    }
}
