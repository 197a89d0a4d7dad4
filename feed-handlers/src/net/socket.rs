//! Socket setup for the transport (and for feed handlers reading exchange multicast):
//! multicast joins (any-source and source-specific), buffers, the multicast sending socket and
//! the unicast re-request sockets. Setup only; the loops just call `recv`/`send`.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// A socket could not be set up; names what was being done and the address.
#[derive(Debug, thiserror::Error)]
#[error("{what} {addr}: {source}")]
pub struct SocketError {
    /// What was being done.
    pub what: &'static str,
    /// The address involved.
    pub addr: SocketAddrV4,
    /// The system's error.
    pub source: io::Error,
}

fn err(what: &'static str, addr: SocketAddrV4) -> impl FnOnce(io::Error) -> SocketError {
    move |source| SocketError { what, addr, source }
}

/// Largest UDP payload over IPv4: a buffer this size never truncates a datagram.
pub const MAX_DATAGRAM: usize = 65_507;

/// A bound, nonblocking receiving socket and what the kernel granted for its buffer.
#[derive(Debug)]
pub struct RecvSocket {
    /// The socket.
    pub socket: UdpSocket,
    /// Usable `SO_RCVBUF`, as granted.
    pub rcvbuf: usize,
}

/// The buffer size the kernel reports: Linux doubles the value set (for bookkeeping) and
/// reports the doubled value; the usable size is half of it.
fn usable(reported: usize) -> usize {
    if cfg!(target_os = "linux") {
        reported / 2
    } else {
        reported
    }
}

/// Opens a receiving socket for `group`.
///
/// A multicast `group` is joined on `interface` (source-specific when `source` is given,
/// `IP_ADD_SOURCE_MEMBERSHIP`), with the socket bound to the group address so that other
/// groups on the same port are not received. A unicast `group` is simply bound (port 0 picks
/// a free port). `SO_REUSEADDR` lets several receivers share a group on one host. A receive
/// buffer the kernel clamps below `rcvbuf` adds a warning to `warnings`.
pub fn recv_socket(
    group: SocketAddrV4,
    source: Option<Ipv4Addr>,
    interface: Ipv4Addr,
    rcvbuf: usize,
    warnings: &mut Vec<String>,
) -> Result<RecvSocket, SocketError> {
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
    Ok(RecvSocket {
        socket: socket.into(),
        rcvbuf: granted,
    })
}

/// Sets `SO_RCVBUF` and reads it back; warns when the kernel clamped it (to
/// `net.core.rmem_max`). `want == 0` keeps the system default.
fn set_rcvbuf(
    socket: &Socket,
    want: usize,
    addr: SocketAddrV4,
    warnings: &mut Vec<String>,
) -> Result<usize, SocketError> {
    if want != 0 {
        socket
            .set_recv_buffer_size(want)
            .map_err(err("SO_RCVBUF on", addr))?;
    }
    let granted = usable(
        socket
            .recv_buffer_size()
            .map_err(err("reading SO_RCVBUF of", addr))?,
    );
    if want != 0 && granted < want {
        warnings.push(format!(
            "socket {addr}: SO_RCVBUF of {want} bytes asked, the kernel granted {granted} \
             (raise net.core.rmem_max to at least {want}); bursts may overflow it"
        ));
    }
    Ok(granted)
}

/// Receive buffer of the unicast re-request and retransmission-server sockets: a burst
/// recovery (answers) or a request flood must not overflow the kernel's default (~200 KiB) and
/// lose the real requests and answers with it. Best effort: a clamp (`net.core.rmem_max`)
/// leaves what the kernel grants.
pub const UNICAST_RCVBUF: usize = 4 << 20;

/// A bound, nonblocking unicast socket with a large receive buffer.
fn unicast_socket(local: SocketAddrV4, what: &'static str) -> Result<Socket, SocketError> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(err("creating the socket for", local))?;
    let _ = socket.set_recv_buffer_size(UNICAST_RCVBUF);
    socket.bind(&local.into()).map_err(err(what, local))?;
    socket
        .set_nonblocking(true)
        .map_err(err("O_NONBLOCK on", local))?;
    Ok(socket)
}

/// The unicast socket re-requests go out of (and answers come back to), bound on
/// `interface`, nonblocking. Connected to `server` when it is known, so only its answers are
/// received; otherwise requests are sent with `send_to` to an address learned from the feed.
pub fn request_socket(
    interface: Ipv4Addr,
    server: Option<SocketAddrV4>,
) -> Result<UdpSocket, SocketError> {
    let local = SocketAddrV4::new(interface, 0);
    let socket = unicast_socket(local, "binding the re-request socket on")?;
    if let Some(server) = server {
        socket
            .connect(&server.into())
            .map_err(err("connecting the re-request socket to", server))?;
    }
    Ok(socket.into())
}

/// Options of the multicast sending socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendOptions {
    /// Interface address to send from (`0.0.0.0`: the kernel's route for the group).
    pub interface: Ipv4Addr,
    /// `IP_MULTICAST_TTL`: how many routers the packets may cross (1: this subnet).
    pub ttl: u32,
    /// `IP_MULTICAST_LOOP`: deliver to receivers on this host too.
    pub loopback: bool,
    /// `SO_SNDBUF` in bytes (0: the system default).
    pub sndbuf: usize,
}

/// The socket packets are multicast from: bound on the interface, connected to `group` (so a
/// send is one `send` call), blocking (a full send buffer waits rather than drops).
pub fn send_socket(
    group: SocketAddrV4,
    opts: &SendOptions,
    warnings: &mut Vec<String>,
) -> Result<UdpSocket, SocketError> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(err("creating the sending socket for", group))?;
    if group.ip().is_multicast() {
        socket
            .set_multicast_if_v4(&opts.interface)
            .map_err(err("IP_MULTICAST_IF for", group))?;
        socket
            .set_multicast_ttl_v4(opts.ttl)
            .map_err(err("IP_MULTICAST_TTL for", group))?;
        socket
            .set_multicast_loop_v4(opts.loopback)
            .map_err(err("IP_MULTICAST_LOOP for", group))?;
    }
    if opts.sndbuf != 0 {
        socket
            .set_send_buffer_size(opts.sndbuf)
            .map_err(err("SO_SNDBUF for", group))?;
        let granted = usable(
            socket
                .send_buffer_size()
                .map_err(err("reading SO_SNDBUF for", group))?,
        );
        if granted < opts.sndbuf {
            warnings.push(format!(
                "sending socket for {group}: SO_SNDBUF of {} bytes asked, the kernel granted \
                 {granted} (raise net.core.wmem_max)",
                opts.sndbuf
            ));
        }
    }
    let local = SocketAddrV4::new(opts.interface, 0);
    socket
        .bind(&local.into())
        .map_err(err("binding the sending socket on", local))?;
    socket
        .connect(&group.into())
        .map_err(err("connecting the sending socket to", group))?;
    Ok(socket.into())
}

/// The retransmission server's socket: bound on `addr` (port 0: any free port), nonblocking.
pub fn server_socket(addr: SocketAddrV4) -> Result<UdpSocket, SocketError> {
    Ok(unicast_socket(addr, "binding the retransmission server on")?.into())
}
