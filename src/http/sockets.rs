//! The operating-system side of the connection guard (Linux only): find the server's client
//! connections among the process's descriptors, read how far tiny_http has read each one, and
//! shut one down. See [`super::guard`] for why and for the rules.
//!
//! tiny_http owns the accepted sockets and exposes none of them, so the guard finds them in
//! `/proc/self/fd`. It never acts on a bare descriptor number: it duplicates the number and
//! checks that the duplicate is the very socket it listed (same inode) before using it, so a
//! descriptor closed and reused in between is never touched. A shutdown through the duplicate
//! acts on the socket itself, which tiny_http still owns and closes as usual.
//!
//! With `heap`, the crate's only `unsafe` code: two calls that the safe wrappers do not cover.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

pub use rustix::net::Shutdown;

/// This process's descriptor table, `/proc/self/fd`, opened once: each link is then read
/// relative to it (`readlinkat`), without walking the path from `/` for every descriptor
/// (that walk was most of the guard's cost: 12.7% of a core with 1,000 idle connections).
pub struct DescriptorTable {
    dir: OwnedFd,
}

impl DescriptorTable {
    /// Opens the table.
    pub fn open() -> io::Result<Self> {
        use rustix::fs::{CWD, Mode, OFlags};
        let dir = rustix::fs::openat(
            CWD,
            "/proc/self/fd",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(DescriptorTable { dir })
    }

    /// Every socket descriptor of this process: its number and its socket inode.
    pub fn sockets(&self) -> io::Result<Vec<(RawFd, u64)>> {
        let mut out = Vec::new();
        let mut link = Vec::with_capacity(32);
        for entry in rustix::fs::Dir::read_from(&self.dir)? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            let Some(fd) = name.to_str().ok().and_then(|s| s.parse().ok()) else {
                continue;
            };
            // A descriptor closed since the listing has no link any more: skip it.
            let Ok(target) = rustix::fs::readlinkat(&self.dir, name, std::mem::take(&mut link))
            else {
                continue;
            };
            if let Some(inode) = target
                .to_str()
                .ok()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse().ok())
            {
                out.push((fd, inode));
            }
            link = target.into_bytes();
        }
        Ok(out)
    }
}

/// A duplicate of descriptor `fd`, if it still is the socket `inode`. Closing the duplicate
/// (dropping it) leaves the original open.
pub fn duplicate(fd: RawFd, inode: u64) -> Option<OwnedFd> {
    // SAFETY: the borrow lives only for this one `fcntl(F_DUPFD_CLOEXEC)` call, which reads
    // nothing through the descriptor: the kernel looks the number up and either fails (EBADF,
    // when another thread closed it meanwhile) or duplicates whatever the number names at
    // that instant. Which of those happened is checked on the duplicate we own, below.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let dup = rustix::io::fcntl_dupfd_cloexec(borrowed, 0).ok()?;
    let stat = rustix::fs::fstat(&dup).ok()?;
    (stat.st_ino == inode).then_some(dup)
}

/// What the guard needs to know about one socket.
pub struct Identity {
    /// True for a listening socket.
    pub listening: bool,
    /// The local address, when it is an IP socket.
    pub local: Option<SocketAddr>,
    /// The peer address, when it is a connected IP socket.
    pub peer: Option<SocketAddr>,
}

/// Identifies a socket.
pub fn identify(sock: &OwnedFd) -> Identity {
    let ip = |addr: Option<rustix::net::SocketAddrAny>| addr.and_then(|a| a.try_into().ok());
    Identity {
        listening: rustix::net::sockopt::socket_acceptconn(sock).unwrap_or(true),
        local: ip(rustix::net::getsockname(sock).ok()),
        peer: ip(rustix::net::getpeername(sock).ok().flatten()),
    }
}

/// How far a connection has come, in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes the application has read: all the bytes the kernel received from the peer, less
    /// those still queued.
    pub read: u64,
    /// Bytes received and waiting to be read.
    pub queued: u64,
    /// Bytes of ours the peer has acknowledged (taken).
    pub acked: u64,
    /// Data of ours is waiting to be sent or to be acknowledged.
    pub sending: bool,
    /// The peer has closed its side (the socket is in CLOSE_WAIT): tiny_http reads the end of
    /// the stream next and closes the connection.
    pub peer_closed: bool,
}

/// Linux's `TCP_CLOSE_WAIT` state (include/net/tcp_states.h), as `tcp_info` reports it.
const TCP_CLOSE_WAIT: u8 = 8;

/// How far a connection has come. `None` when the kernel does not report the byte counts
/// (before Linux 4.6).
pub fn progress(sock: &OwnedFd) -> Option<Progress> {
    let info = tcp_info(sock.as_fd())?;
    let queued = rustix::io::ioctl_fionread(sock).ok()?;
    Some(Progress {
        read: info.tcpi_bytes_received.saturating_sub(queued),
        queued,
        acked: info.tcpi_bytes_acked,
        sending: info.tcpi_notsent_bytes > 0 || info.tcpi_unacked > 0,
        peer_closed: info.tcpi_state == TCP_CLOSE_WAIT,
    })
}

fn tcp_info(sock: BorrowedFd<'_>) -> Option<libc::tcp_info> {
    // SAFETY: `info` is a plain C struct that zeroes are valid for; `getsockopt` writes at
    // most `len` bytes into it and reports in `len` how many it wrote, which is checked below
    // before any field is trusted (older kernels fill a shorter prefix).
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::from_mut(&mut info).cast(),
            &mut len,
        );
        let needed = std::mem::offset_of!(libc::tcp_info, tcpi_notsent_bytes) + 4;
        (rc == 0 && len as usize >= needed).then_some(info)
    }
}

/// Shuts the socket down: `Read` wakes a thread blocked reading it (it reads end of file) and
/// lets a response still be written; `Both` ends the connection.
pub fn shutdown(sock: &OwnedFd, how: Shutdown) -> io::Result<()> {
    Ok(rustix::net::shutdown(sock, how)?)
}

/// Makes the socket end with a reset (RST) instead of a FIN when it is closed.
pub fn reset_on_close(sock: &OwnedFd) -> io::Result<()> {
    Ok(rustix::net::sockopt::set_socket_linger(
        sock,
        Some(Duration::ZERO),
    )?)
}

/// Bounds each single write on the sockets `listener` will accept: Linux copies a listening
/// socket's send timeout to each connection it accepts. (Each write waits anew and any
/// progress restarts it, so the guard's response deadline is what bounds a whole response.
/// The receive timeout is not set this way: `accept` itself would honour it, and tiny_http's
/// accept loop ends for good on its first error.)
pub fn set_send_timeout(listener: &impl AsFd, timeout: Duration) -> io::Result<()> {
    Ok(rustix::net::sockopt::set_socket_timeout(
        listener,
        rustix::net::sockopt::Timeout::Send,
        Some(timeout),
    )?)
}

/// The send timeout of a socket (for tests of [`set_send_timeout`]).
pub fn send_timeout(sock: &impl AsFd) -> io::Result<Option<Duration>> {
    Ok(rustix::net::sockopt::socket_timeout(
        sock,
        rustix::net::sockopt::Timeout::Send,
    )?)
}

/// Raises this process's soft limit on open descriptors towards `wanted` (never above the
/// hard limit, never lowering it) and returns the soft limit in force afterwards.
pub fn raise_descriptor_limit(wanted: u64) -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    if soft >= wanted {
        return soft;
    }
    let target = limit.maximum.map_or(wanted, |hard| wanted.min(hard));
    let raised = rustix::process::Rlimit {
        current: Some(target),
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => target,
        Err(_) => soft,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    fn inode_of(fd: RawFd) -> u64 {
        DescriptorTable::open()
            .expect("open")
            .sockets()
            .expect("list")
            .into_iter()
            .find(|(n, _)| *n == fd)
            .map(|(_, ino)| ino)
            .expect("listed")
    }

    #[test]
    fn connections_are_listed_identified_and_measured() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut client = TcpStream::connect(addr).expect("connect");
        let (server_side, peer) = listener.accept().expect("accept");

        let ino = inode_of(listener.as_raw_fd());
        let dup = duplicate(listener.as_raw_fd(), ino).expect("dup");
        assert!(identify(&dup).listening);

        let ino = inode_of(server_side.as_raw_fd());
        let dup = duplicate(server_side.as_raw_fd(), ino).expect("dup");
        let id = identify(&dup);
        assert!(!id.listening);
        assert_eq!(id.local, Some(addr));
        assert_eq!(id.peer, Some(peer));
        // A wrong inode is refused: the number names another socket now.
        assert!(duplicate(server_side.as_raw_fd(), ino + 1).is_none());

        use std::io::{Read, Write};
        client.write_all(b"0123456789").expect("write");
        std::thread::sleep(Duration::from_millis(50));
        let p = progress(&dup).expect("progress");
        assert_eq!((p.read, p.queued), (0, 10), "received but not yet read");
        let mut buf = [0u8; 4];
        (&server_side).read_exact(&mut buf).expect("read");
        let p = progress(&dup).expect("progress");
        assert_eq!((p.read, p.queued), (4, 6));
        (&server_side).write_all(b"abc").expect("answer");
        std::thread::sleep(Duration::from_millis(50));
        let p = progress(&dup).expect("progress");
        assert_eq!(
            (p.acked, p.sending),
            (3, false),
            "taken by the client's kernel"
        );

        // Shutting the duplicate down ends the original's reads: the client sees end of file.
        shutdown(&dup, Shutdown::Both).expect("shutdown");
        drop(dup);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).expect("eof");
        assert_eq!(rest, b"abc", "the answer, then end of file");
    }

    #[test]
    fn accepted_connections_inherit_the_listeners_send_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        set_send_timeout(&listener, Duration::from_secs(7)).expect("set");
        let _client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (conn, _) = listener.accept().expect("accept");
        assert_eq!(
            send_timeout(&conn).expect("get"),
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn the_descriptor_limit_is_never_lowered() {
        let now = raise_descriptor_limit(0);
        assert!(now > 0);
        assert!(raise_descriptor_limit(16) >= 16.min(now));
    }
}
