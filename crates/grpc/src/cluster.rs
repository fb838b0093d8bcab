//! `ServerFeatures.GetSupportedMethods` and `Gossip.Read`.

use std::time::{SystemTime, UNIX_EPOCH};

use events::EventStore;
use tonic::{Request, Response, Status};

use crate::proto::gossip::{ClusterInfo, EndPoint, MemberInfo, gossip_server::Gossip, member_info};
use crate::proto::server_features::{
    SupportedMethod, SupportedMethods, server_features_server::ServerFeatures,
};
use crate::proto::shared::Empty;
use crate::server::Face;

/// The KurrentDB version reported. The official clients gate features on the methods listed
/// (the Rust client enables `batch_append` only when `batchappend` is listed) and on the
/// version (clients of 24.x read `caught_up` messages); 24.10 is a version whose clients
/// expect nothing beyond what is served. `docs/KURRENTDB.md` says which features follow.
pub const REPORTED_VERSION: &str = "24.10.0";

const STREAMS_SERVICE: &str = "event_store.client.streams.streams";

/// The ServerFeatures service.
pub struct FeaturesService<S> {
    face: Face<S>,
}

impl<S> FeaturesService<S> {
    /// Over `face`.
    pub fn new(face: Face<S>) -> Self {
        FeaturesService { face }
    }
}

#[tonic::async_trait]
impl<S: EventStore> ServerFeatures for FeaturesService<S> {
    async fn get_supported_methods(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<SupportedMethods>, Status> {
        // Clients call this before any credentials matter; it reveals nothing stored.
        let _ = (&self.face, request);
        let method = |service: &str, name: &str, features: &[&str]| SupportedMethod {
            method_name: name.to_owned(),
            service_name: service.to_owned(),
            features: features.iter().map(|f| (*f).to_owned()).collect(),
        };
        Ok(Response::new(SupportedMethods {
            methods: vec![
                method(STREAMS_SERVICE, "read", &["position", "events"]),
                method(STREAMS_SERVICE, "append", &[]),
                method(STREAMS_SERVICE, "batchappend", &[]),
                method(STREAMS_SERVICE, "delete", &[]),
                method(STREAMS_SERVICE, "tombstone", &[]),
                method("event_store.client.gossip.gossip", "read", &[]),
                method(
                    "event_store.client.server_features.serverfeatures",
                    "getsupportedmethods",
                    &[],
                ),
            ],
            event_store_server_version: REPORTED_VERSION.to_owned(),
        }))
    }
}

/// The Gossip service: one member, this node, the alive leader, at the gRPC address.
pub struct GossipService<S> {
    face: Face<S>,
}

impl<S> GossipService<S> {
    /// Over `face`.
    pub fn new(face: Face<S>) -> Self {
        GossipService { face }
    }
}

#[tonic::async_trait]
impl<S: EventStore> Gossip for GossipService<S> {
    async fn read(&self, _request: Request<Empty>) -> Result<Response<ClusterInfo>, Status> {
        let advertised = self.face.advertised();
        let now_ticks = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| (since.as_nanos() / 100) as i64);
        Ok(Response::new(ClusterInfo {
            members: vec![MemberInfo {
                instance_id: Some(crate::convert::uuid_to(self.face.instance_id(), true)),
                time_stamp: now_ticks,
                state: member_info::VNodeState::Leader as i32,
                is_alive: true,
                http_end_point: Some(EndPoint {
                    address: advertised.ip().to_string(),
                    port: u32::from(advertised.port()),
                }),
            }],
        }))
    }
}
