//! The ceiling of HTTP/1.1 serving on this stack: hyper on current-thread Tokio runtimes, as
//! `logbook serve` runs it, answering every request with a fixed body the size of a read by
//! id, with no router, middleware, authentication or store. `scripts/bench-vs-redis` runs `wrk`
//! against it beside the real server and Redis, so that what the serving stack costs and what
//! Logbook's own layers cost can be told apart in one run (docs/PERFORMANCE.md, issue 15).
//!
//! ```sh
//! cargo run --release -p logbook --example http_ceiling -- 127.0.0.1:18093 4
//! wrk -t2 -c64 -d5s http://127.0.0.1:18093/events/x
//! ```
//!
//! A `POST` is answered 201 and anything else 200, with the same body, which carries an
//! `"id"`: so `logbook bench` (which appends events to read back, then reads them) can load it
//! too, and the ceiling is measured with the same client as the server.
//!
//! Arguments: the address, and the number of threads (each binds the address with
//! `SO_REUSEPORT`, so the kernel deals connections to them).

use std::net::SocketAddr;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

/// About the size of a read by id's answer (~570 bytes of JSON).
const BODY_BYTES: usize = 570;

fn main() {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:18093".to_owned())
        .parse()
        .expect("an address such as 127.0.0.1:18093");
    let threads: usize = args
        .next()
        .map(|n| n.parse().expect("a thread count"))
        .unwrap_or(4);
    let body: &'static [u8] = Box::leak(
        format!(
            "{{\"id\":\"{}\",\"position\":0,\"data\":\"{}\"}}",
            uuid::Uuid::nil(),
            "x".repeat(BODY_BYTES - 71)
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let lanes: Vec<_> = (0..threads)
        .map(|_| std::thread::spawn(move || lane(addr, body)))
        .collect();
    println!("http_ceiling: listening on http://{addr} with {threads} threads");
    for lane in lanes {
        lane.join().expect("a lane panicked");
    }
}

fn lane(addr: SocketAddr, body: &'static [u8]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket.set_reuseport(true).expect("SO_REUSEPORT");
        socket.bind(addr).expect("bind");
        let listener = socket.listen(1024).expect("listen");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                        let status = if request.method() == hyper::Method::POST {
                            hyper::StatusCode::CREATED
                        } else {
                            hyper::StatusCode::OK
                        };
                        let response = hyper::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Body::from(body))
                            .expect("a response");
                        std::future::ready(Ok::<_, std::convert::Infallible>(response))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
