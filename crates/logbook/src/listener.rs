//! A TCP listener with a cap on concurrent connections.
//!
//! Each accepted connection holds a semaphore permit until its socket is dropped; at the cap,
//! `accept` waits for a permit, so further clients wait in the kernel's backlog instead of
//! costing the server memory. Accepted sockets get `TCP_NODELAY`: responses are written whole,
//! and Nagle's algorithm would only add latency.
//!
//! [`crate::server::serve`] accepts from it and hands each request its peer address
//! (`ConnectInfo<SocketAddr>`, which the teams rate limit needs).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A listener that admits at most `max_connections` open connections at a time.
pub struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
}

impl LimitedListener {
    /// Wraps a bound listener.
    pub fn new(inner: TcpListener, max_connections: usize) -> LimitedListener {
        LimitedListener {
            inner,
            permits: Arc::new(Semaphore::new(max_connections)),
        }
    }
}

/// An accepted connection; frees its slot when dropped.
pub struct LimitedStream {
    stream: TcpStream,
    /// The connection's slot under the cap, held for as long as the socket is open.
    permit: OwnedSemaphorePermit,
}

impl LimitedStream {
    /// The socket taken off the runtime it was accepted on, still holding its slot.
    pub fn into_std(self) -> io::Result<StdLimitedStream> {
        Ok(StdLimitedStream {
            stream: self.stream.into_std()?,
            permit: self.permit,
        })
    }
}

/// An accepted connection between two runtimes (see [`crate::server::Lanes`]).
pub struct StdLimitedStream {
    stream: std::net::TcpStream,
    permit: OwnedSemaphorePermit,
}

impl StdLimitedStream {
    /// Registers the socket with the calling runtime.
    pub fn into_tokio(self) -> io::Result<LimitedStream> {
        Ok(LimitedStream {
            stream: TcpStream::from_std(self.stream)?,
            permit: self.permit,
        })
    }
}

impl Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (LimitedStream, SocketAddr) {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed");
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    if let Err(error) = stream.set_nodelay(true) {
                        tracing::debug!(error = %error, "cannot set TCP_NODELAY");
                    }
                    return (LimitedStream { stream, permit }, addr);
                }
                // Per-connection errors (reset before accept) are normal; anything else (out of
                // file descriptors) gets a pause so the loop does not spin.
                Err(error) if is_connection_error(&error) => {}
                Err(error) => {
                    tracing::error!(error = %error, "accept failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
