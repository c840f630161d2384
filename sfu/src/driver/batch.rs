//! `sendmmsg(2)` and `recvmmsg(2)` on the shared media socket: one system call for a batch of
//! datagrams, each with its own peer address, and on receive the kernel's arrival timestamp
//! (`SO_TIMESTAMPNS`), so that datagrams read together keep the spacing they arrived with.
//!
//! Why by hand (docs/decisions.md): a forwarded packet fans out to many receivers, each at its
//! own address, so the batch has many destinations. `quinn-udp` batches one destination (GSO)
//! only; `nix`'s `sendmmsg` keeps raw pointers in a preallocated, non-`Send` header array that
//! cannot live in the driver's tokio task without an `unsafe impl Send` or an allocation per
//! call. Here the headers live on the stack for the duration of the call: no allocation, and
//! the only unsafe code is the two system calls and the address view they fill.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Duration;

use socket2::{SockAddr, SockAddrStorage};

use crate::shard::Transmit;

/// Datagrams per system call, both directions.
pub const BATCH: usize = 32;

/// Send `items` (at most [`BATCH`] are looked at) in one `sendmmsg`. Returns how many the
/// kernel accepted: at least one on success. An error means the first datagram failed
/// (`WouldBlock` included); the caller decides whether to skip it or wait.
pub fn send(fd: RawFd, items: &[Transmit]) -> io::Result<usize> {
    let n = items.len().min(BATCH);
    if n == 0 {
        return Ok(0);
    }
    let addrs: [SockAddr; BATCH] = std::array::from_fn(|i| {
        let a = items.get(i).map_or(UNSPECIFIED, |t| t.remote);
        SockAddr::from(a)
    });
    let mut iov: [libc::iovec; BATCH] = std::array::from_fn(|i| {
        let data = items.get(i).map_or(&[][..], |t| &t.data[..]);
        libc::iovec {
            iov_base: data.as_ptr().cast_mut().cast(),
            iov_len: data.len(),
        }
    });
    // SAFETY: an all-zero `mmsghdr` is a valid value (no name, no iovec, no control data).
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        let h = &mut hdrs[i].msg_hdr;
        h.msg_name = addrs[i].as_ptr().cast_mut().cast();
        h.msg_namelen = addrs[i].len();
        h.msg_iov = &mut iov[i];
        h.msg_iovlen = 1;
    }
    // SAFETY: `hdrs[..n]` point into `addrs`, `iov` and the caller's buffers, all of which
    // outlive the call; the kernel only reads them (and writes `msg_len`).
    let r = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// One received datagram.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    pub from: SocketAddr,
    /// When the kernel queued it (wall clock, since the Unix epoch), if timestamps are on.
    pub stamp: Option<Duration>,
}

impl Received {
    pub const EMPTY: Self = Self {
        len: 0,
        from: UNSPECIFIED,
        stamp: None,
    };
}

/// Ask the kernel to timestamp every datagram on arrival (`SO_TIMESTAMPNS`, wall clock in
/// nanoseconds, delivered as a control message that [`recv`] reads).
pub fn enable_rx_timestamps(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a live c_int and its size is passed; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Control-message space per datagram: room for a `timespec` control message, in `u64`s so
/// that it is aligned for `cmsghdr`.
const CONTROL_WORDS: usize = 8;

/// Receive up to [`BATCH`] datagrams in one `recvmmsg` into consecutive `slot`-byte windows of
/// `buf`; `out[i]` gets datagram i's length, source and arrival timestamp. Returns how many
/// arrived (at least one), or `WouldBlock` when none is queued. A datagram longer than `slot` is
/// truncated (and then fails authentication or parsing downstream, as a truncated read always
/// did).
pub fn recv(fd: RawFd, buf: &mut [u8], slot: usize, out: &mut [Received; BATCH]) -> io::Result<usize> {
    let n = (buf.len() / slot.max(1)).min(BATCH);
    if n == 0 {
        return Ok(0);
    }
    let mut names: [SockAddrStorage; BATCH] = std::array::from_fn(|_| SockAddrStorage::zeroed());
    let mut control = [[0u64; CONTROL_WORDS]; BATCH];
    let mut iov: [libc::iovec; BATCH] = std::array::from_fn(|_| libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    });
    for (v, chunk) in iov.iter_mut().zip(buf.chunks_exact_mut(slot)).take(n) {
        v.iov_base = chunk.as_mut_ptr().cast();
        v.iov_len = slot;
    }
    // SAFETY: an all-zero `mmsghdr` is a valid value.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        let size = names[i].size_of();
        let h = &mut hdrs[i].msg_hdr;
        h.msg_name = (&mut names[i] as *mut SockAddrStorage).cast();
        h.msg_namelen = size;
        h.msg_iov = &mut iov[i];
        h.msg_iovlen = 1;
        h.msg_control = control[i].as_mut_ptr().cast();
        h.msg_controllen = std::mem::size_of::<[u64; CONTROL_WORDS]>() as _;
    }
    // SAFETY: every header points at a distinct `slot`-byte window of `buf`, a distinct `names`
    // entry and a distinct `control` buffer, all alive and exclusively borrowed for the call;
    // MSG_DONTWAIT never blocks.
    let r = unsafe {
        libc::recvmmsg(
            fd,
            hdrs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = r as usize;
    let mut kept = 0;
    for i in 0..got {
        let len = hdrs[i].msg_hdr.msg_namelen;
        // SAFETY: the kernel wrote a socket address of `len` bytes into `names[i]`.
        let addr = unsafe { SockAddr::new(std::mem::replace(&mut names[i], SockAddrStorage::zeroed()), len) };
        // Only IP sources can reach a UDP socket; anything else is skipped.
        if let Some(a) = addr.as_socket() {
            out[kept] = Received {
                len: (hdrs[i].msg_len as usize).min(slot),
                from: a,
                stamp: timestamp(&hdrs[i].msg_hdr),
            };
            kept += 1;
        }
    }
    Ok(kept)
}

/// The `SCM_TIMESTAMPNS` control message of a received header, if there is one.
fn timestamp(h: &libc::msghdr) -> Option<Duration> {
    // SAFETY: `h` is a header the kernel filled in: `msg_control`/`msg_controllen` describe the
    // control messages it wrote into our buffer (controllen was trimmed to what it wrote), and
    // the CMSG_* macros only walk within that length.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            let m = &*c;
            let data_len = (m.cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
            if m.cmsg_level == libc::SOL_SOCKET
                && m.cmsg_type == libc::SCM_TIMESTAMPNS
                && data_len >= std::mem::size_of::<libc::timespec>()
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                let secs = u64::try_from(ts.tv_sec).ok()?;
                let nanos = u32::try_from(ts.tv_nsec).ok().filter(|n| *n < 1_000_000_000)?;
                return Some(Duration::new(secs, nanos));
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

const UNSPECIFIED: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    fn t(data: &[u8], remote: SocketAddr) -> Transmit {
        Transmit {
            remote,
            data: bytes::BytesMut::from(data),
        }
    }

    #[test]
    fn batch_round_trip_to_several_destinations() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.set_nonblocking(true).unwrap();
        let rxs: Vec<UdpSocket> = (0..3).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        let payloads: Vec<Vec<u8>> = (0..7u8).map(|i| vec![i; 100 + i as usize]).collect();
        let items: Vec<Transmit> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| t(p, rxs[i % 3].local_addr().unwrap()))
            .collect();
        assert_eq!(send(tx.as_raw_fd(), &items).unwrap(), 7);

        let mut out = [Received::EMPTY; BATCH];
        let mut buf = vec![0u8; BATCH * 256];
        let mut seen = Vec::new();
        for rx in &rxs {
            rx.set_nonblocking(true).unwrap();
            let n = recv(rx.as_raw_fd(), &mut buf, 256, &mut out).unwrap();
            for (i, &Received { len, from, stamp }) in out[..n].iter().enumerate() {
                assert_eq!(from, tx.local_addr().unwrap());
                assert_eq!(stamp, None, "timestamps were not asked for");
                let d = &buf[i * 256..i * 256 + len];
                assert!(d.iter().all(|b| *b == d[0]) && len == 100 + d[0] as usize);
                seen.push(d[0]);
            }
            // Nothing more queued: WouldBlock, not a hang.
            let e = recv(rx.as_raw_fd(), &mut buf, 256, &mut out).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..7).collect::<Vec<u8>>());
    }

    #[test]
    fn oversized_datagram_is_truncated_to_the_slot() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(&[9u8; 600], rx.local_addr().unwrap()).unwrap();
        let mut out = [Received::EMPTY; BATCH];
        let mut buf = vec![0u8; 4 * 512];
        let mut n = 0;
        for _ in 0..100 {
            match recv(rx.as_raw_fd(), &mut buf, 512, &mut out) {
                Ok(k) => {
                    n = k;
                    break;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        assert_eq!(n, 1);
        assert_eq!(out[0].len, 512);
    }

    /// With `SO_TIMESTAMPNS` on, datagrams read in one batch carry the kernel's arrival times:
    /// wall-clock, in arrival order, spaced as they were sent.
    #[test]
    fn batch_keeps_kernel_arrival_times() {
        use std::time::{Duration, SystemTime, UNIX_EPOCH};
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_rx_timestamps(rx.as_raw_fd()).unwrap();
        let now = || SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let mut out = [Received::EMPTY; BATCH];
        let mut buf = vec![0u8; BATCH * 256];
        // Linux turns arrival stamping on through deferred work after the first socket asks;
        // until it ran, datagrams are stamped when read. Wait until one read 5 ms after its
        // arrival carries the arrival time.
        let warm = now() + Duration::from_secs(2);
        loop {
            tx.send_to(&[9; 8], rx.local_addr().unwrap()).unwrap();
            std::thread::sleep(Duration::from_millis(5));
            let n = recv(rx.as_raw_fd(), &mut buf, 256, &mut out).unwrap();
            let read = now();
            let stamped = out[..n].iter().all(|r| {
                r.stamp
                    .is_some_and(|s| read.saturating_sub(s) >= Duration::from_millis(3))
            });
            if stamped || read > warm {
                break;
            }
        }
        let before = now();
        for i in 0..3u8 {
            tx.send_to(&[i; 40], rx.local_addr().unwrap()).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let n = recv(rx.as_raw_fd(), &mut buf, 256, &mut out).unwrap();
        // After the read: on a loaded machine loopback delivery (and its stamp) can lag the
        // send by the softirq's delay, past the last sleep.
        let after = now();
        assert_eq!(n, 3, "all three queued before the one read");
        let stamps: Vec<Duration> = out[..n].iter().map(|r| r.stamp.expect("timestamped")).collect();
        for s in &stamps {
            assert!(*s >= before && *s <= after, "{s:?} outside [{before:?}, {after:?}]");
        }
        for w in stamps.windows(2) {
            let gap = w[1].saturating_sub(w[0]);
            assert!(gap >= Duration::from_millis(15), "spacing lost: {stamps:?}");
        }
    }

    #[test]
    fn ipv6_destination_on_a_dual_stack_socket() {
        let Ok(tx) = UdpSocket::bind("[::1]:0") else { return }; // no IPv6 loopback here
        let rx = UdpSocket::bind("[::1]:0").unwrap();
        let items = [t(b"hello", rx.local_addr().unwrap())];
        assert_eq!(send(tx.as_raw_fd(), &items).unwrap(), 1);
        let mut b = [0u8; 16];
        let (n, from) = rx.recv_from(&mut b).unwrap();
        assert_eq!((&b[..n], from), (&b"hello"[..], tx.local_addr().unwrap()));
    }
}
