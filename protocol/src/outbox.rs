//! The write half of a connection on a task of its own, so that frames flushed one by one
//! coalesce: the emulator's AMQP connections and the service client's.
//!
//! fe2o3 flushes after every frame. Writing each one straight to the socket costs a syscall
//! and, on TLS, a record per frame: under load that was a fifth of the emulator's CPU. Here
//! the connection's frames go into an [`Outbox`] and a writer task takes everything waiting
//! in one go: a lone frame is written as soon as the writer runs (nothing waits for company),
//! and while one batch is on its way the next one gathers. This holds for every stream the
//! AMQP stack runs on (TLS, WebSocket, plain TCP). [`BatchedStream`] puts a whole stream
//! behind one, for a client that hands fe2o3 a stream.
//!
//! A flush returns once the bytes are in the outbox; a write error reaches fe2o3 on its next
//! write or flush. Past [`HIGH_WATER`] waiting bytes, writes push back. When the connection
//! is over (the token given to [`Outbox::spawn`] is cancelled, or the outbox is dropped) the
//! writer has the grace given to [`Outbox::spawn`] to get the last frames (a `close`) out,
//! then lets the socket go.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf};
use tokio_util::sync::CancellationToken;

/// Bytes waiting for the writer before [`Outbox::poll_ready`] pushes back.
pub const HIGH_WATER: usize = 256 * 1024;
/// A batch buffer larger than this is not kept for the next batch: an idle connection should
/// not pin the memory of its busiest moment.
const KEEP_CAPACITY: usize = 64 * 1024;

#[derive(Debug, Default)]
struct State {
    /// Bytes for the writer.
    buf: BytesMut,
    /// The writer, parked for want of bytes.
    writer: Option<Waker>,
    /// The producer, parked for room or for the shutdown to finish.
    producer: Option<Waker>,
    /// Writing failed: every later write fails with this.
    failed: Option<io::ErrorKind>,
    /// The producer asked for the stream to be shut down once its bytes are out.
    shutdown: bool,
    /// The writer shut the stream down (or gave up): nothing more goes out.
    done: bool,
    /// The producer is gone.
    dropped: bool,
}

#[derive(Debug, Default)]
struct Shared(Mutex<State>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the writer does next.
enum Next {
    /// Write the batch it was handed.
    Write,
    /// Nothing more will come: shut the stream down and end.
    Finish,
}

/// The producer's end: fe2o3's side of the connection.
#[derive(Debug)]
pub struct Outbox {
    shared: Arc<Shared>,
}

impl Outbox {
    /// Starts the writer task on `io`; it ends when the outbox is dropped or shut down, when
    /// a write fails, or `grace` after `ended` is cancelled.
    pub fn spawn<W>(io: W, ended: CancellationToken, grace: Duration) -> Outbox
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::new(Shared::default());
        tokio::spawn(write_loop(io, shared.clone(), ended, grace));
        Outbox { shared }
    }

    /// Ready when there is room for more bytes; an error once writing has failed.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = self.shared.lock();
        if let Some(kind) = s.failed {
            return Poll::Ready(Err(kind.into()));
        }
        if s.buf.len() >= HIGH_WATER && !s.done {
            s.producer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    /// Hands every byte of `out` to the writer (leaving `out` empty) and wakes it.
    pub fn push(&self, out: &mut BytesMut) {
        if out.is_empty() {
            return;
        }
        self.hand_over(|buf| {
            if buf.is_empty() {
                std::mem::swap(buf, out);
            } else {
                buf.extend_from_slice(out);
            }
        });
        out.clear();
    }

    /// Hands a copy of `bytes` to the writer and wakes it.
    pub fn push_slice(&self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.hand_over(|buf| buf.extend_from_slice(bytes));
        }
    }

    /// Adds to the writer's bytes with `add` and wakes it; nothing once the writer is done.
    fn hand_over(&self, add: impl FnOnce(&mut BytesMut)) {
        let mut s = self.shared.lock();
        if s.done {
            return;
        }
        add(&mut s.buf);
        if let Some(w) = s.writer.take() {
            drop(s);
            w.wake();
        }
    }

    /// The error writing met, if any (a flush reports it).
    pub fn check(&self) -> io::Result<()> {
        match self.shared.lock().failed {
            Some(kind) => Err(kind.into()),
            None => Ok(()),
        }
    }

    /// Asks the writer to shut the stream down once everything pushed is out; Ready when it
    /// has.
    pub fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = self.shared.lock();
        if let Some(kind) = s.failed {
            return Poll::Ready(Err(kind.into()));
        }
        if s.done {
            return Poll::Ready(Ok(()));
        }
        s.shutdown = true;
        s.producer = Some(cx.waker().clone());
        let writer = s.writer.take();
        drop(s);
        if let Some(w) = writer {
            w.wake();
        }
        Poll::Pending
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.dropped = true;
        let writer = s.writer.take();
        drop(s);
        if let Some(w) = writer {
            w.wake();
        }
    }
}

/// Swaps the waiting bytes into `batch` (which is empty), or says there will be none.
fn poll_next(shared: &Shared, cx: &mut Context<'_>, batch: &mut BytesMut) -> Poll<Next> {
    let mut s = shared.lock();
    if !s.buf.is_empty() {
        std::mem::swap(&mut s.buf, batch);
        let producer = s.producer.take();
        drop(s);
        if let Some(w) = producer {
            w.wake();
        }
        return Poll::Ready(Next::Write);
    }
    if s.shutdown || s.dropped {
        return Poll::Ready(Next::Finish);
    }
    s.writer = Some(cx.waker().clone());
    Poll::Pending
}

async fn write_loop<W>(mut io: W, shared: Arc<Shared>, ended: CancellationToken, grace: Duration)
where
    W: AsyncWrite + Unpin,
{
    // Runs out `grace` after the connection is over.
    let grace = async move {
        ended.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::pin!(grace);
    let mut batch = BytesMut::new();
    let failed = loop {
        let next = tokio::select! {
            n = poll_fn(|cx| poll_next(&shared, cx, &mut batch)) => n,
            _ = &mut grace => break None,
        };
        match next {
            Next::Write => {
                let written = tokio::select! {
                    r = async {
                        io.write_all(&batch).await?;
                        io.flush().await
                    } => r,
                    _ = &mut grace => break None,
                };
                if let Err(e) = written {
                    break Some(e.kind());
                }
                batch.clear();
                if batch.capacity() > KEEP_CAPACITY {
                    batch = BytesMut::new();
                }
            }
            Next::Finish => {
                tokio::select! {
                    _ = io.shutdown() => {}
                    _ = &mut grace => {}
                }
                break None;
            }
        }
    };
    let mut s = shared.lock();
    s.done = true;
    s.failed = s.failed.or(failed);
    s.buf = BytesMut::new();
    let producer = s.producer.take();
    drop(s);
    if let Some(w) = producer {
        w.wake();
    }
}

/// A stream whose writes go through an [`Outbox`]: what fe2o3 flushes frame by frame leaves
/// in batches. Reads pass straight through. Dropping it gives the writer its grace to get the
/// last bytes out.
///
/// ```no_run
/// # async fn open(tcp: tokio::net::TcpStream) {
/// use iothub_protocol::outbox::BatchedStream;
/// let stream = BatchedStream::new(tcp, std::time::Duration::from_secs(2));
/// // hand `stream` to the AMQP connection (fe2o3's `open_with_stream`)
/// # drop(stream);
/// # }
/// ```
#[derive(Debug)]
pub struct BatchedStream<S> {
    read: ReadHalf<S>,
    outbox: Outbox,
    ended: CancellationToken,
}

impl<S: AsyncRead + AsyncWrite + Send + 'static> BatchedStream<S> {
    /// Splits `stream` and starts its writer task (which needs a tokio runtime).
    pub fn new(stream: S, grace: Duration) -> Self {
        let (read, write) = tokio::io::split(stream);
        let ended = CancellationToken::new();
        BatchedStream {
            read,
            outbox: Outbox::spawn(write, ended.clone(), grace),
            ended,
        }
    }
}

impl<S> Drop for BatchedStream<S> {
    fn drop(&mut self) {
        self.ended.cancel();
    }
}

impl<S: AsyncRead> AsyncRead for BatchedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().read).poll_read(cx, buf)
    }
}

impl<S> AsyncWrite for BatchedStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.outbox.poll_ready(cx))?;
        this.outbox.push_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    /// Ready at once: the writer task writes what the outbox holds without being asked.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.outbox.check())
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.outbox.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    const GRACE: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn a_batched_stream_reads_through_and_writes_in_order() {
        let (ours, mut peer) = tokio::io::duplex(1024);
        let mut stream = BatchedStream::new(ours, GRACE);
        for frame in [&b"one "[..], b"two ", b"three"] {
            stream.write_all(frame).await.unwrap();
            stream.flush().await.unwrap();
        }
        peer.write_all(b"back").await.unwrap();
        let mut got = [0u8; 4];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"back");
        stream.shutdown().await.unwrap();
        let mut all = Vec::new();
        peer.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"one two three");
    }

    #[tokio::test]
    async fn pushed_bytes_arrive_in_order_and_shutdown_waits_for_them() {
        let (io, mut peer) = tokio::io::duplex(64);
        let out = Outbox::spawn(io, CancellationToken::new(), GRACE);
        let mut expected = Vec::new();
        for i in 0..200u8 {
            poll_fn(|cx| out.poll_ready(cx)).await.unwrap();
            let mut b = BytesMut::from(&[i; 7][..]);
            expected.extend_from_slice(&b);
            out.push(&mut b);
            assert!(b.is_empty());
        }
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            got
        });
        poll_fn(|cx| out.poll_shutdown(cx)).await.unwrap();
        assert_eq!(reader.await.unwrap(), expected);
    }

    #[tokio::test]
    async fn a_lone_frame_goes_out_without_a_flush_or_more_frames() {
        let (io, mut peer) = tokio::io::duplex(1024);
        let out = Outbox::spawn(io, CancellationToken::new(), GRACE);
        out.push(&mut BytesMut::from(&b"frame"[..]));
        let mut got = [0u8; 5];
        tokio::time::timeout(std::time::Duration::from_secs(5), peer.read_exact(&mut got))
            .await
            .expect("written without anything else happening")
            .unwrap();
        assert_eq!(&got, b"frame");
    }

    #[tokio::test]
    async fn writes_push_back_past_the_high_water_mark() {
        // The peer reads nothing: the writer stalls and the outbox fills.
        let (io, _peer) = tokio::io::duplex(16);
        let out = Outbox::spawn(io, CancellationToken::new(), GRACE);
        let mut pushed = 0;
        let blocked = loop {
            let ready = poll_fn(|cx| Poll::Ready(out.poll_ready(cx))).await;
            if ready.is_pending() {
                break true;
            }
            if pushed > 4 * HIGH_WATER {
                break false;
            }
            out.push(&mut BytesMut::from(&[0u8; 4096][..]));
            pushed += 4096;
            tokio::task::yield_now().await;
        };
        assert!(blocked, "never pushed back after {pushed} bytes");
        assert!(pushed >= HIGH_WATER);
    }

    #[tokio::test]
    async fn a_failed_write_fails_the_next_one() {
        let (io, peer) = tokio::io::duplex(64);
        drop(peer);
        let out = Outbox::spawn(io, CancellationToken::new(), GRACE);
        out.push(&mut BytesMut::from(&b"lost"[..]));
        let err = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                if let Err(e) = out.check() {
                    return e;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the error shows");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        assert!(poll_fn(|cx| out.poll_ready(cx)).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_end_a_stuck_writer_gives_up_within_the_grace() {
        let (io, _peer) = tokio::io::duplex(16);
        let ended = CancellationToken::new();
        let out = Outbox::spawn(io, ended.clone(), GRACE);
        out.push(&mut BytesMut::from(&[0u8; 1024][..]));
        ended.cancel();
        let started = tokio::time::Instant::now();
        let done = poll_fn(|cx| out.poll_shutdown(cx)).await;
        assert!(done.is_ok());
        assert!(started.elapsed() >= GRACE);
    }
}
