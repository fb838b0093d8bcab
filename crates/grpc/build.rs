//! Compiles `proto/*.proto` with `protox` (pure Rust: no system `protoc`) and generates the
//! tonic services and prost messages from the descriptors.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/shared.proto",
        "proto/status.proto",
        "proto/streams.proto",
        "proto/gossip.proto",
        "proto/serverfeatures.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    // Clients too: the crate's own tests speak the protocol directly where the official
    // clients hide a detail (error shapes, gossip).
    // `map<string, string>` fields (an event's system metadata) as BTreeMaps: a read builds
    // one per event, and three entries cost less in a BTreeMap than hashing into a HashMap.
    tonic_build::configure()
        .build_server(true)
        .build_client(true)
        .btree_map(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
