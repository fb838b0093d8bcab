//! What the tests of the real binary share: finding the address a started `logbook` serves,
//! and reading the log back.

// Each test file is its own crate and uses only some of these.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Child;

/// Reads the child's stdout until `logbook: listening on <base>` and answers `<base>`
/// (`http://127.0.0.1:<port>`), then keeps draining stdout on a thread so the server never
/// blocks on a full pipe. If the child exits first, panics with its stderr, read from
/// `stderr_log` (the file its stderr goes to).
pub fn listening_base(child: &mut Child, stderr_log: &Path) -> String {
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let Some(Ok(line)) = lines.next() else {
            let stderr = std::fs::read_to_string(stderr_log).unwrap_or_default();
            panic!("the server exited without printing its address:\n{stderr}");
        };
        if let Some(base) = line.strip_prefix("logbook: listening on ") {
            break base.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    base
}

/// As [`listening_base`], for a server with the gRPC face on: answers the gRPC address
/// (`127.0.0.1:<port>`, printed first as `logbook: gRPC on <addr>`) and the HTTP base.
pub fn listening_grpc_and_base(child: &mut Child, stderr_log: &Path) -> (String, String) {
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let mut grpc = None;
    let base = loop {
        let Some(Ok(line)) = lines.next() else {
            let stderr = std::fs::read_to_string(stderr_log).unwrap_or_default();
            panic!("the server exited without printing its addresses:\n{stderr}");
        };
        if let Some(addr) = line.strip_prefix("logbook: gRPC on ") {
            grpc = Some(addr.to_owned());
        }
        if let Some(base) = line.strip_prefix("logbook: listening on ") {
            break base.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (
        grpc.expect("the gRPC address is printed before the HTTP one"),
        base,
    )
}

/// The ids of the first page (up to 1,000) of `GET /events`, in log order, asserting that
/// positions start at 0 and have no gap.
pub async fn ids_in_log_order(client: &reqwest::Client, base: &str) -> Vec<String> {
    let page: serde_json::Value = client
        .get(format!("{base}/events?limit=1000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(position, event)| {
            assert_eq!(event["position"], position, "positions have a gap");
            event["id"].as_str().unwrap().to_owned()
        })
        .collect()
}
