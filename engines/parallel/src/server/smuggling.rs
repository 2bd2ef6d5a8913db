//! A request carrying both `Transfer-Encoding` and `Content-Length` gets a 400 (RFC 9112
//! §6.1: the way request smuggling hides a second request behind a proxy's idea of the body).
//! hyper reads such a request by its chunked framing and closes the connection after it,
//! which is safe but answers it; this reader, between the socket and hyper, follows the
//! framing of the requests on a connection, holds each request head until it is whole, and
//! when a head carries both makes its `Transfer-Encoding` one hyper refuses (so hyper answers
//! 400 and closes, through its own error path). Everything else passes unchanged: bodies as
//! they arrive, heads once whole. On anything it does not follow (a head httparse refuses, an
//! upgrade) it steps aside for the rest of the connection and hyper decides.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// hyper's default limit on header count; a head with more is hyper's to refuse (431).
const MAX_HEADERS: usize = 100;
/// The longest chunk-size or trailer line followed; longer ones are hyper's to refuse.
const MAX_LINE: usize = 4096;

#[derive(Debug, PartialEq)]
enum Framing {
    /// Waiting for a whole request head (held back from hyper meanwhile).
    Head,
    /// `Content-Length` bytes of body still to come.
    Body(u64),
    /// A chunk-size line (its bytes so far).
    ChunkSize(Vec<u8>),
    /// A chunk's data still to come, then its CRLF.
    ChunkData(u64),
    /// The CRLF after a chunk's data: how many of its bytes are still to come.
    ChunkEnd(u8),
    /// The trailer section after the last chunk: the current line's bytes so far.
    Trailers(Vec<u8>),
    /// Not followed any more: everything passes.
    Off,
}

pub struct SmugglingGuard<S> {
    inner: S,
    framing: Framing,
    /// The head being received, held back until whole (at most `max_head` bytes).
    head: Vec<u8>,
    max_head: usize,
    /// Bytes already let through, not yet read by hyper.
    ready: Vec<u8>,
    ready_from: usize,
}

impl<S> SmugglingGuard<S> {
    pub fn new(inner: S, max_head: usize) -> Self {
        SmugglingGuard {
            inner,
            framing: Framing::Head,
            head: Vec::new(),
            max_head,
            ready: Vec::new(),
            ready_from: 0,
        }
    }

    /// Follows `bytes` (just read from the socket), letting through what hyper may see.
    fn follow(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let used = match &mut self.framing {
                Framing::Off => {
                    self.ready.extend_from_slice(bytes);
                    bytes.len()
                }
                Framing::Head => {
                    self.head.extend_from_slice(bytes);
                    match self.end_of_head() {
                        Some(extra) => {
                            // The bytes after the head are the next state's (the bytes held
                            // before these held no whole head, so they all come from these).
                            self.head.truncate(self.head.len() - extra);
                            self.ready.append(&mut self.head);
                            bytes.len() - extra
                        }
                        None => {
                            if self.framing == Framing::Off || self.head.len() > self.max_head {
                                self.framing = Framing::Off;
                                self.ready.append(&mut self.head);
                            }
                            bytes.len()
                        }
                    }
                }
                Framing::Body(left) => {
                    let used = pass_counted(left, bytes, &mut self.ready);
                    if *left == 0 {
                        self.framing = Framing::Head;
                    }
                    used
                }
                Framing::ChunkSize(line) => {
                    let (used, whole) = take_line(line, bytes);
                    self.ready.extend_from_slice(&bytes[..used]);
                    if whole {
                        self.framing = match httparse::parse_chunk_size(line) {
                            Ok(httparse::Status::Complete((_, 0))) => Framing::Trailers(Vec::new()),
                            Ok(httparse::Status::Complete((_, size))) => Framing::ChunkData(size),
                            _ => Framing::Off,
                        };
                    } else if line.len() > MAX_LINE {
                        self.framing = Framing::Off;
                    }
                    used
                }
                Framing::ChunkData(left) => {
                    let used = pass_counted(left, bytes, &mut self.ready);
                    if *left == 0 {
                        self.framing = Framing::ChunkEnd(2);
                    }
                    used
                }
                Framing::ChunkEnd(left) => {
                    let expected = if *left == 2 { b'\r' } else { b'\n' };
                    self.ready.push(bytes[0]);
                    *left -= 1;
                    if bytes[0] != expected {
                        self.framing = Framing::Off;
                    } else if *left == 0 {
                        self.framing = Framing::ChunkSize(Vec::new());
                    }
                    1
                }
                Framing::Trailers(line) => {
                    let (used, whole) = take_line(line, bytes);
                    self.ready.extend_from_slice(&bytes[..used]);
                    if whole {
                        if line == b"\r\n" || line == b"\n" {
                            self.framing = Framing::Head;
                        } else {
                            line.clear();
                        }
                    } else if line.len() > MAX_LINE {
                        self.framing = Framing::Off;
                    }
                    used
                }
            };
            bytes = &bytes[used..];
        }
    }

    /// Whether `self.head` holds a whole head; if so, sets the framing of what follows it (and
    /// spoils a smuggling head's `Transfer-Encoding`) and returns how many bytes follow it.
    fn end_of_head(&mut self) -> Option<usize> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let length = match request.parse(&self.head) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return None,
            Err(_) => {
                self.framing = Framing::Off;
                return None;
            }
        };
        let mut encodings = Vec::new(); // where each Transfer-Encoding value lies in the head
        let mut lengths = Vec::new();
        let mut upgrade = request.method == Some("CONNECT");
        for header in request.headers.iter() {
            if header.name.eq_ignore_ascii_case("transfer-encoding") {
                let start = header.value.as_ptr() as usize - self.head.as_ptr() as usize;
                encodings.push(start..start + header.value.len());
            } else if header.name.eq_ignore_ascii_case("content-length") {
                lengths
                    .push(std::str::from_utf8(header.value).ok().and_then(|v| v.trim().parse::<u64>().ok()));
            } else if header.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        let chunked = encodings.last().is_some_and(|last| {
            let value = &self.head[last.clone()];
            value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        });
        self.framing = if !encodings.is_empty() && !lengths.is_empty() {
            // Smuggling: no coding hyper accepts is left, so it answers 400 and closes.
            for place in encodings {
                self.head[place].fill(b'x');
            }
            Framing::Off
        } else if upgrade || (!encodings.is_empty() && !chunked) {
            Framing::Off
        } else if chunked {
            Framing::ChunkSize(Vec::new())
        } else {
            match lengths.as_slice() {
                [] | [Some(0)] => Framing::Head,
                [Some(length)] => Framing::Body(*length),
                _ => Framing::Off, // unparsable or repeated: hyper's to judge
            }
        };
        Some(self.head.len() - length)
    }
}

/// Lets through up to `left` bytes of `bytes` (a body or a chunk's data), counting them off:
/// how many were taken.
fn pass_counted(left: &mut u64, bytes: &[u8], ready: &mut Vec<u8>) -> usize {
    let used = bytes.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
    *left -= used as u64;
    ready.extend_from_slice(&bytes[..used]);
    used
}

/// Appends to `line` the bytes of `bytes` up to and including the first LF: how many were
/// taken, and whether the line is now whole.
fn take_line(line: &mut Vec<u8>, bytes: &[u8]) -> (usize, bool) {
    match bytes.iter().position(|&b| b == b'\n') {
        Some(at) => {
            line.extend_from_slice(&bytes[..=at]);
            (at + 1, true)
        }
        None => {
            line.extend_from_slice(bytes);
            (bytes.len(), false)
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SmugglingGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.ready_from < this.ready.len() {
                let count = out.remaining().min(this.ready.len() - this.ready_from);
                out.put_slice(&this.ready[this.ready_from..this.ready_from + count]);
                this.ready_from += count;
                if this.ready_from == this.ready.len() {
                    this.ready.clear();
                    this.ready_from = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.framing == Framing::Off {
                return Pin::new(&mut this.inner).poll_read(context, out);
            }
            let mut space = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut space);
            ready!(Pin::new(&mut this.inner).poll_read(context, &mut read))?;
            if read.filled().is_empty() {
                // The end: a partial head held back goes to hyper, which judges it.
                this.ready.append(&mut this.head);
                if this.ready.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                this.framing = Framing::Off;
                continue;
            }
            this.follow(read.filled());
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SmugglingGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(context, bytes)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What hyper would see of `pieces` arriving one after another.
    fn seen(pieces: &[&[u8]]) -> (Vec<u8>, Framing) {
        let mut guard = SmugglingGuard::new((), 64 * 1024);
        for piece in pieces {
            guard.follow(piece);
        }
        (guard.ready, guard.framing)
    }

    #[test]
    fn heads_are_held_until_whole_and_bodies_pass() {
        let (ready, framing) = seen(&[b"POST / HTTP/1.1\r\nHost: x\r\nContent-Le", b"ngth: 5\r\n\r\nab"]);
        assert_eq!(ready, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab");
        assert_eq!(framing, Framing::Body(3));
        let (ready, framing) = seen(&[b"GET / HTTP/1.1\r\nHost: x\r\n"]);
        assert!(ready.is_empty());
        assert_eq!(framing, Framing::Head);
    }

    #[test]
    fn pipelined_requests_and_chunked_bodies_are_followed() {
        let stream: &[u8] = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;ext=1\r\nhello\r\n0\r\nTrailer: t\r\n\r\n\
            POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\
            GET /c HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        // Whole, and one byte at a time: the same.
        for pieces in [vec![stream], stream.chunks(1).collect()] {
            let (ready, framing) = seen(&pieces);
            let spoiled = String::from_utf8(ready).unwrap();
            assert!(spoiled.contains("/b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /c"));
            assert!(spoiled.ends_with("Content-Length: 5\r\nTransfer-Encoding: xxxxxxx\r\n\r\n0\r\n\r\n"));
            assert_eq!(spoiled.matches("xxxxxxx").count(), 1);
            assert_eq!(framing, Framing::Off);
        }
    }

    #[test]
    fn a_body_that_looks_like_a_head_is_not_taken_for_one() {
        let body: &[u8] = b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut stream = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        stream.extend_from_slice(body);
        let (ready, framing) = seen(&[&stream]);
        assert_eq!(ready, stream);
        assert_eq!(framing, Framing::Head);
    }

    #[test]
    fn what_it_does_not_follow_passes_to_hyper() {
        let (ready, framing) = seen(&[b"NOT A REQUEST\r\n\r\n"]);
        assert_eq!((ready.as_slice(), framing), (b"NOT A REQUEST\r\n\r\n".as_slice(), Framing::Off));
        let mut guard = SmugglingGuard::new((), 100);
        guard.follow(&[b'a'; 200]);
        assert_eq!((guard.ready.len(), guard.framing), (200, Framing::Off));
        let (_, framing) = seen(&[b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"]);
        assert_eq!(framing, Framing::Off);
    }
}
