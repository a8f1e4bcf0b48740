//! Compiles proto/shoal/v1/*.proto in pure Rust (protox), so a fresh machine needs no
//! protoc.

use std::{error::Error, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files: Vec<PathBuf> = [
        "chat.proto",
        "cluster.proto",
        "jobs.proto",
        "kv.proto",
        "raft.proto",
    ]
    .iter()
    .map(|f| root.join("shoal/v1").join(f))
    .collect();
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(&files, [&root])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
