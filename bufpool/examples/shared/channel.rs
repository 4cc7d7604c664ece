//! Handing an export to another process: a Unix socket carries the two read-only fds as
//! SCM_RIGHTS ancillary data, plus a short text line (the page count). The same socket is the
//! reader's channel back to the pool: it sends the ids of pages it found evicted (8 bytes
//! each, little endian) and the pool faults them in.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use bufpool::{Export, PageId, Pool};
use sendfd::{RecvWithFd, SendWithFd};

/// Accepts one reader on `listener` and sends it the export and `page_count`.
pub fn send_export(
    listener: &UnixListener,
    export: &Export,
    page_count: u64,
) -> std::io::Result<UnixStream> {
    let (stream, _) = listener.accept()?;
    let line = format!("{page_count}\n");
    let fds = [export.frames.as_raw_fd(), export.states.as_raw_fd()];
    stream.send_with_fd(line.as_bytes(), &fds)?;
    Ok(stream)
}

/// Connects to the pool process and receives the export and the page count.
pub fn receive_export(socket: &Path) -> std::io::Result<(UnixStream, Export, u64)> {
    let stream = UnixStream::connect(socket)?;
    let mut line = [0u8; 32];
    let mut fds = [-1; 2];
    let (length, fd_count) = stream.recv_with_fd(&mut line, &mut fds)?;
    if fd_count != 2 {
        return Err(std::io::Error::other(format!(
            "expected 2 fds, got {fd_count}"
        )));
    }
    // SAFETY: recv_with_fd just installed these two descriptors in this process; we own them.
    let (frames, states) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let text = std::str::from_utf8(&line[..length]).map_err(std::io::Error::other)?;
    let page_count = text.trim().parse().map_err(std::io::Error::other)?;
    Ok((stream, Export { frames, states }, page_count))
}

/// Reader side: asks the pool to fault `page` in.
pub fn request_fault_in(stream: &mut UnixStream, page: PageId) -> std::io::Result<()> {
    stream.write_all(&page.0.to_le_bytes())
}

/// Pool side: serves fault-in requests until the reader closes the socket. Returns how many
/// were served.
pub fn serve_fault_ins(mut stream: UnixStream, pool: &Pool) -> u64 {
    let mut served = 0;
    let mut request = [0u8; 8];
    while stream.read_exact(&mut request).is_ok() {
        let page = PageId(u64::from_le_bytes(request));
        // Best effort: a page latched or out of range is simply not prefetched.
        if pool.prefetch(&[page]).is_ok() {
            served += 1;
        }
    }
    served
}
