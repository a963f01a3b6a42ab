//! The gRPC port's connections, held to a deadline for their first bytes: a client must
//! send the HTTP/2 preface (or a TLS client hello) within the header timeout, so that sockets
//! opened and left silent, or trickled a byte at a time, cannot pile up. Established
//! connections are kept honest by HTTP/2 pings (see `grpc::serve`). Connections past the
//! listener's cap (`--max-connections`) are closed at once and counted.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::connections::Connections;

/// Bytes that must arrive before the deadline: the HTTP/2 client preface is 24 bytes, and a
/// TLS client hello is longer.
const FIRST_BYTES: usize = 24;

pub struct DeadlineStream {
    inner: TcpStream,
    deadline: Option<Pin<Box<Sleep>>>,
    received: usize,
    /// The connection's place under the listener's cap, given back when it closes.
    _permit: OwnedSemaphorePermit,
}

impl DeadlineStream {
    fn new(inner: TcpStream, timeout: Duration, permit: OwnedSemaphorePermit) -> Self {
        DeadlineStream {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            received: 0,
            _permit: permit,
        }
    }
}

impl AsyncRead for DeadlineStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.received += buf.filled().len() - before;
                if this.received >= FIRST_BYTES {
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no HTTP/2 preface within the header timeout (--http-header-timeout)",
                    )))
                } else {
                    Poll::Pending
                }
            }
            other => other,
        }
    }
}

impl AsyncWrite for DeadlineStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Connected for DeadlineStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

/// The listener's connections, each with its deadline. Failed accepts (a full file table)
/// are skipped, as tonic's own listener does; connections past the cap are closed.
pub fn incoming(
    listener: TcpListener,
    timeout: Duration,
    connections: Arc<Connections>,
) -> impl Stream<Item = io::Result<DeadlineStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener).filter_map(move |accepted| {
        let stream = accepted.ok()?;
        let permit = connections.grpc.admit()?;
        let _ = stream.set_nodelay(true);
        Some(Ok(DeadlineStream::new(stream, timeout, permit)))
    })
}
