//! Generates the remote-integration protocol's messages and gRPC service from
//! `proto/remote.proto`, with the protoc that `protoc-bin-vendored` ships (no system install).

fn main() {
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("protoc-bin-vendored has no protoc for this platform");
    // SAFETY: build scripts are single-threaded; nothing else reads the environment meanwhile.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=proto/remote.proto");
    tonic_prost_build::configure()
        .compile_protos(&["proto/remote.proto"], &["proto"])
        .expect("compiling proto/remote.proto");
}
