//! Compiles the protobuf files under `trellis/` with protox (no protoc needed) into prost
//! messages and tonic services.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["trellis/ca/v1/certificate.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
