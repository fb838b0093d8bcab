//! # grpc: the KurrentDB-compatible gRPC face of the event store
//!
//! Existing KurrentDB clients (Python `kurrentdbclient`, Rust `kurrentdb`, .NET, Java, Node,
//! Go) connect to Logbook with `kurrentdb://127.0.0.1:2113?tls=false` and work unchanged. The
//! face is generic over the storage seam ([`events::EventStore`]), so it serves both
//! backends, and it never reaches past the seam.
//!
//! # Layout
//! - `proto/*.proto` (in the crate): our own definitions of the messages and services served,
//!   compiled at build time by `protox` (pure Rust, no system `protoc`); [`proto`] holds the
//!   generated code.
//! - [`streams`]: `Streams.Append`, `BatchAppend`, `Read` (reads and catch-up subscriptions),
//!   `Delete`, `Tombstone`.
//! - [`cluster`]: `ServerFeatures.GetSupportedMethods` and `Gossip.Read`.
//! - [`convert`]: the mapping between the protocol and the contract (positions, revisions,
//!   ids, times).
//! - [`status`]: the one place [`events::Error`] and access failures become gRPC statuses in
//!   the shapes KurrentDB's clients parse.
//! - [`filter`]: KurrentDB's server-side filters (prefixes, or .NET-style regular expressions,
//!   lookarounds included).
//! - [`server`]: [`Face`] (the shared state), [`serve`] (the listener loop with the connection
//!   cap and graceful shutdown).
//!
//! # Mapping
//! - revision = version; commit position = prepare position = position **+ 1**, so no event
//!   sits at commit position 0, which clients read as "the start".
//! - `created` = recorded time in 100 ns ticks since the Unix epoch.
//! - Data and metadata bytes are stored as sent; `content-type: application/json` marks them
//!   JSON ([`events::ContentType`]).

#![warn(missing_docs)]
#![forbid(unsafe_code)]
// tonic's handlers answer `Result<_, tonic::Status>` (176 bytes); the helpers they call return
// the same type rather than boxing it at every `?`.
#![allow(clippy::result_large_err)]

pub mod cluster;
pub mod convert;
pub mod filter;
pub mod server;
pub mod status;
pub mod streams;

/// The generated protocol code, in modules that mirror the protobuf packages (the generated
/// code refers to other packages by relative paths).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    /// `event_store.*`.
    pub mod event_store {
        /// `event_store.client`: shared messages, and a module per service.
        pub mod client {
            tonic::include_proto!("event_store.client");
            /// `event_store.client.streams`.
            pub mod streams {
                tonic::include_proto!("event_store.client.streams");
            }
            /// `event_store.client.gossip`.
            pub mod gossip {
                tonic::include_proto!("event_store.client.gossip");
            }
            /// `event_store.client.server_features`.
            pub mod server_features {
                tonic::include_proto!("event_store.client.server_features");
            }
        }
    }
    /// `google.rpc`: the status inside a BatchAppend error.
    pub mod google {
        /// `google.rpc`.
        pub mod rpc {
            tonic::include_proto!("google.rpc");
        }
    }
    pub use event_store::client as shared;
    pub use event_store::client::{gossip, server_features, streams};
    pub use google::rpc;
}

pub use server::{Face, GrpcSettings, serve};
