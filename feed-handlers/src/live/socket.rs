//! Socket setup of the live handler: multicast joins (ASM and SSM), receive buffers, the
//! unicast re-request socket. Setup only; the loop just calls `recv`/`send`.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

use super::LiveError;

/// A bound, nonblocking feed socket and what the kernel granted for its receive buffer.
#[derive(Debug)]
pub(super) struct LineSocket {
    pub(super) socket: UdpSocket,
    pub(super) rcvbuf: usize,
}

fn err(what: &'static str, addr: SocketAddrV4) -> impl FnOnce(io::Error) -> LiveError {
    move |source| LiveError::Socket { what, addr, source }
}

/// The receive buffer the kernel reports: Linux doubles the value set (for bookkeeping) and
/// reports the doubled value; the usable size is half of it.
fn usable_rcvbuf(reported: usize) -> usize {
    if cfg!(target_os = "linux") {
        reported / 2
    } else {
        reported
    }
}

/// Opens the socket of one feed line.
///
/// A multicast `group` is joined on `interface` (source-specific when `source` is given,
/// `IP_ADD_SOURCE_MEMBERSHIP`), with the socket bound to the group address so that other
/// groups on the same port are not received. A unicast `group` is simply bound (port 0 picks
/// a free port). `SO_REUSEADDR` lets several handlers share a group on one host.
pub(super) fn line_socket(
    group: SocketAddrV4,
    source: Option<Ipv4Addr>,
    interface: Ipv4Addr,
    rcvbuf: usize,
    warnings: &mut Vec<String>,
) -> Result<LineSocket, LiveError> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(err("creating the socket for", group))?;
    socket
        .set_reuse_address(true)
        .map_err(err("SO_REUSEADDR on", group))?;
    let granted = set_rcvbuf(&socket, rcvbuf, group, warnings)?;
    socket.bind(&group.into()).map_err(err("binding", group))?;
    if group.ip().is_multicast() {
        match source {
            Some(src) => socket
                .join_ssm_v4(&src, group.ip(), &interface)
                .map_err(err("joining (source-specific) group", group))?,
            None => socket
                .join_multicast_v4(group.ip(), &interface)
                .map_err(err("joining group", group))?,
        }
    }
    socket
        .set_nonblocking(true)
        .map_err(err("O_NONBLOCK on", group))?;
    Ok(LineSocket {
        socket: socket.into(),
        rcvbuf: granted,
    })
}

/// Sets `SO_RCVBUF` and reads it back; warns when the kernel clamped it (to
/// `net.core.rmem_max`).
fn set_rcvbuf(
    socket: &Socket,
    want: usize,
    group: SocketAddrV4,
    warnings: &mut Vec<String>,
) -> Result<usize, LiveError> {
    if want == 0 {
        return Ok(usable_rcvbuf(
            socket
                .recv_buffer_size()
                .map_err(err("reading SO_RCVBUF of", group))?,
        ));
    }
    socket
        .set_recv_buffer_size(want)
        .map_err(err("SO_RCVBUF on", group))?;
    let granted = usable_rcvbuf(
        socket
            .recv_buffer_size()
            .map_err(err("reading SO_RCVBUF of", group))?,
    );
    if granted < want {
        let w = format!(
            "feed socket {group}: SO_RCVBUF of {want} bytes asked, the kernel granted {granted} \
             (raise net.core.rmem_max to at least {want}); bursts may overflow it"
        );
        eprintln!("mdbus live feed: warning: {w}");
        warnings.push(w);
    }
    Ok(granted)
}

/// The unicast socket re-requests go out of (and answers come back to), bound on `interface`
/// and connected to the server so only its answers are received.
pub(super) fn request_socket(
    interface: Ipv4Addr,
    server: SocketAddrV4,
) -> Result<UdpSocket, LiveError> {
    let local = SocketAddrV4::new(interface, 0);
    let socket = UdpSocket::bind(local).map_err(err("binding the re-request socket on", local))?;
    socket
        .connect(server)
        .map_err(err("connecting the re-request socket to", server))?;
    socket
        .set_nonblocking(true)
        .map_err(err("O_NONBLOCK on the re-request socket to", server))?;
    Ok(socket)
}
