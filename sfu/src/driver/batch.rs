//! `sendmmsg(2)` and `recvmmsg(2)` on the shared media socket: one system call for a batch of
//! datagrams, each with its own peer address.
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

/// Receive up to [`BATCH`] datagrams in one `recvmmsg` into consecutive `slot`-byte windows of
/// `buf`; `out[i]` gets datagram i's length and source. Returns how many arrived (at least one),
/// or `WouldBlock` when none is queued. A datagram longer than `slot` is truncated (and then
/// fails authentication or parsing downstream, as a truncated read always did).
pub fn recv(fd: RawFd, buf: &mut [u8], slot: usize, out: &mut [(usize, SocketAddr); BATCH]) -> io::Result<usize> {
    let n = (buf.len() / slot.max(1)).min(BATCH);
    if n == 0 {
        return Ok(0);
    }
    let mut names: [SockAddrStorage; BATCH] = std::array::from_fn(|_| SockAddrStorage::zeroed());
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
    }
    // SAFETY: every header points at a distinct `slot`-byte window of `buf` and a distinct
    // `names` entry, all alive and exclusively borrowed for the call; MSG_DONTWAIT never blocks.
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
            out[kept] = ((hdrs[i].msg_len as usize).min(slot), a);
            kept += 1;
        }
    }
    Ok(kept)
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

        let mut out = [(0, UNSPECIFIED); BATCH];
        let mut buf = vec![0u8; BATCH * 256];
        let mut seen = Vec::new();
        for rx in &rxs {
            rx.set_nonblocking(true).unwrap();
            let n = recv(rx.as_raw_fd(), &mut buf, 256, &mut out).unwrap();
            for (i, (len, from)) in out[..n].iter().enumerate() {
                assert_eq!(*from, tx.local_addr().unwrap());
                let d = &buf[i * 256..i * 256 + len];
                assert!(d.iter().all(|b| *b == d[0]) && *len == 100 + d[0] as usize);
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
        let mut out = [(0, UNSPECIFIED); BATCH];
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
        assert_eq!(out[0].0, 512);
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
