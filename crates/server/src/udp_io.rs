//! Batched UDP I/O for the plain CoAP socket: `recvmmsg` to take many datagrams per system call,
//! and `sendmmsg` to send every answer of one storage flush in one call.
//!
//! Why not tokio's `UdpSocket`: on these virtual machines a system call (and the wake-up of
//! tokio's reactor for every datagram in and every answer out) cost more CPU per uplink than
//! decoding and storing it. One blocking receive thread and coalesced sends cut the calls per
//! uplink from about four to well under one. Neither std nor socket2 offers the two calls, so
//! they are wrapped here, in one place, with the unsafe parts commented.

use std::cell::RefCell;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;

/// The largest datagram taken whole; UDP over IPv4/IPv6 carries at most this many payload bytes.
pub const MAX_DATAGRAM: usize = 65_536;

/// Datagrams taken per `recvmmsg`. Under load a call returns a few; idle, it returns one.
pub const RECV_BATCH: usize = 32;

/// Most messages handed to one `sendmmsg` (the kernel's UIO_MAXIOV is 1024).
const SEND_CHUNK: usize = 256;

/// Buffers for one `recvmmsg` call, reused from call to call.
pub struct RecvBatch {
    bufs: Vec<Box<[u8]>>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    received: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch::new(RECV_BATCH)
    }
}

impl RecvBatch {
    pub fn new(slots: usize) -> RecvBatch {
        let slots = slots.max(1);
        RecvBatch {
            bufs: (0..slots).map(|_| vec![0u8; MAX_DATAGRAM].into_boxed_slice()).collect(),
            // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which all-zero
            // bytes are a valid (empty) value.
            addrs: vec![unsafe { std::mem::zeroed() }; slots],
            iovs: vec![unsafe { std::mem::zeroed() }; slots],
            hdrs: vec![unsafe { std::mem::zeroed() }; slots],
            received: 0,
        }
    }

    /// Waits for at least one datagram on `socket` (a blocking socket), then takes as many more
    /// as are already queued, up to the batch size. Returns how many were taken.
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.received = 0;
        let slots = self.bufs.len();
        for i in 0..slots {
            self.iovs[i] = libc::iovec { iov_base: self.bufs[i].as_mut_ptr().cast(), iov_len: self.bufs[i].len() };
            let hdr = &mut self.hdrs[i];
            hdr.msg_hdr.msg_name = (&raw mut self.addrs[i]).cast();
            hdr.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_hdr.msg_iov = &raw mut self.iovs[i];
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = std::ptr::null_mut();
            hdr.msg_hdr.msg_controllen = 0;
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
        }
        loop {
            // SAFETY: every header points at this batch's own address slot and iovec, and every
            // iovec at a live buffer of the length it states; the vectors are not touched while
            // the call runs. MSG_WAITFORONE blocks for the first datagram only.
            let n = unsafe {
                libc::recvmmsg(socket.as_raw_fd(), self.hdrs.as_mut_ptr(), slots as libc::c_uint, libc::MSG_WAITFORONE, std::ptr::null_mut())
            };
            if n >= 0 {
                self.received = n as usize;
                return Ok(self.received);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// The datagrams of the last [`RecvBatch::recv`]: bytes and sender. A datagram longer than
    /// [`MAX_DATAGRAM`] cannot arrive over UDP, so none is truncated.
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        (0..self.received).filter_map(move |i| {
            let len = (self.hdrs[i].msg_len as usize).min(self.bufs[i].len());
            Some((&self.bufs[i][..len], socket_addr(&self.addrs[i])?))
        })
    }
}

/// The sender's address as the kernel wrote it, for the two families a UDP socket can have.
/// A UDP socket bound to `addr` (the first address it resolves to). With `reuse_port`, it is
/// opened with SO_REUSEPORT, so the nodes of a cluster on one machine share the port: the kernel
/// hashes each source address to one of the sockets, which keeps a device (and its DTLS session)
/// on one node while the set of nodes stays the same.
pub fn bind(addr: &str, reuse_port: bool) -> io::Result<UdpSocket> {
    use std::net::ToSocketAddrs;
    if !reuse_port {
        return UdpSocket::bind(addr);
    }
    let addr = addr.to_socket_addrs()?.next().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large enough
            // and aligned enough to hold.
            let a = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)), u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Sends queued by [`send_to`] inside [`coalesce`] on this thread, waiting for the end of it.
#[derive(Default)]
struct Pending {
    active: bool,
    sockets: Vec<Arc<UdpSocket>>,
    /// (index into `sockets`, destination, range in `bytes`)
    messages: Vec<(usize, SocketAddr, usize, usize)>,
    bytes: Vec<u8>,
}

thread_local! {
    static PENDING: RefCell<Pending> = RefCell::new(Pending::default());
}

/// Runs `f`, collecting the datagrams [`send_to`] is asked to send on this thread meanwhile, and
/// sends them together when `f` returns (or unwinds), in the order they were asked for. Nested
/// calls join the outermost one.
pub fn coalesce<R>(f: impl FnOnce() -> R) -> R {
    let outermost = PENDING.with(|p| !std::mem::replace(&mut p.borrow_mut().active, true));
    if !outermost {
        return f();
    }
    struct Flush;
    impl Drop for Flush {
        fn drop(&mut self) {
            PENDING.with(|p| {
                let mut p = p.borrow_mut();
                p.active = false;
                flush(&mut p);
            });
        }
    }
    let _flush = Flush;
    f()
}

/// Sends `bytes` to `peer`: at once, or at the end of the enclosing [`coalesce`] on this thread.
/// A failure is logged and otherwise ignored, as a lost datagram would be: CoAP retransmits.
pub fn send_to(socket: &Arc<UdpSocket>, bytes: &[u8], peer: SocketAddr) {
    let queued = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        if !p.active {
            return false;
        }
        let index = match p.sockets.iter().position(|s| Arc::ptr_eq(s, socket)) {
            Some(i) => i,
            None => {
                p.sockets.push(socket.clone());
                p.sockets.len() - 1
            }
        };
        let start = p.bytes.len();
        p.bytes.extend_from_slice(bytes);
        p.messages.push((index, peer, start, bytes.len()));
        true
    });
    if !queued && let Err(e) = socket.send_to(bytes, peer) {
        tracing::debug!("coap send to {peer} failed: {e}");
    }
}

fn flush(p: &mut Pending) {
    for (index, socket) in p.sockets.iter().enumerate() {
        let messages: Vec<_> = p.messages.iter().filter(|m| m.0 == index).collect();
        for chunk in messages.chunks(SEND_CHUNK) {
            let addrs: Vec<socket2::SockAddr> = chunk.iter().map(|m| socket2::SockAddr::from(m.1)).collect();
            let mut iovs: Vec<libc::iovec> = chunk
                .iter()
                .map(|m| libc::iovec { iov_base: p.bytes[m.2..].as_ptr().cast_mut().cast(), iov_len: m.3 })
                .collect();
            // SAFETY: an all-zero mmsghdr is a valid empty header; each is then pointed at its
            // own address and iovec, which outlive the calls below.
            let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; chunk.len()];
            for (i, hdr) in hdrs.iter_mut().enumerate() {
                hdr.msg_hdr.msg_name = addrs[i].as_ptr().cast_mut().cast();
                hdr.msg_hdr.msg_namelen = addrs[i].len();
                hdr.msg_hdr.msg_iov = &raw mut iovs[i];
                hdr.msg_hdr.msg_iovlen = 1;
            }
            let mut sent = 0;
            while sent < hdrs.len() {
                // SAFETY: the headers from `sent` on are valid (see above) and the kernel only
                // reads the buffers (sendmmsg never writes into a message's data).
                let n = unsafe {
                    libc::sendmmsg(socket.as_raw_fd(), hdrs[sent..].as_mut_ptr(), (hdrs.len() - sent) as libc::c_uint, 0)
                };
                if n > 0 {
                    sent += n as usize;
                    continue;
                }
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // This message cannot be sent (e.g. an unroutable address): drop it, go on.
                tracing::debug!("coap send to {} failed: {e}", chunk[sent].1);
                sent += 1;
            }
        }
    }
    p.sockets.clear();
    p.messages.clear();
    p.bytes.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn socket() -> Arc<UdpSocket> {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Arc::new(s)
    }

    #[test]
    fn coalesced_sends_reach_each_peer_in_order_and_batches_receive_them() {
        let server = socket();
        let (a, b) = (socket(), socket());
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        coalesce(|| {
            send_to(&server, b"one", a_addr);
            send_to(&server, b"two", b_addr);
            // Nested: joins the outer batch instead of sending early.
            coalesce(|| send_to(&server, b"three", a_addr));
            // Nothing left yet while the batch is open.
            a.set_nonblocking(true).unwrap();
            assert!(a.recv(&mut [0u8; 16]).is_err(), "sent before the end of coalesce");
            a.set_nonblocking(false).unwrap();
        });
        let mut buf = [0u8; 16];
        let n = a.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"one");
        let n = a.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"three");
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"two");

        // Outside coalesce a send goes at once; the batch receive takes both with their senders.
        let server_addr = server.local_addr().unwrap();
        send_to(&a, b"from a", server_addr);
        send_to(&b, &[7u8; 3000], server_addr);
        let mut batch = RecvBatch::new(4);
        let mut got = Vec::new();
        while got.len() < 2 {
            batch.recv(&server).unwrap();
            got.extend(batch.datagrams().map(|(d, p)| (d.to_vec(), p)));
        }
        assert_eq!(got, vec![(b"from a".to_vec(), a_addr), (vec![7u8; 3000], b_addr)]);
    }

    #[test]
    fn an_unsendable_message_does_not_stop_the_rest() {
        let server = socket();
        let a = socket();
        coalesce(|| {
            // Port 0 is not a destination: the kernel refuses this one message.
            send_to(&server, b"lost", "127.0.0.1:0".parse().unwrap());
            send_to(&server, b"kept", a.local_addr().unwrap());
        });
        let mut buf = [0u8; 16];
        let n = a.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"kept");
    }
}
