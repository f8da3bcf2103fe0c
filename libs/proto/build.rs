//! Compiles every .proto under the workspace's proto/ folder with protox (a pure-Rust
//! protobuf compiler, so no system protoc is needed) and generates prost messages plus tonic
//! clients and servers, each behind its crate feature.

use std::{
    env,
    path::{Path, PathBuf},
};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let proto_root = proto_root.canonicalize()?;
    let mut files = Vec::new();
    collect_protos(&proto_root, &proto_root, &mut files)?;
    files.sort();
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let file_descriptor_set = protox::compile(&files, [&proto_root])?;

    // Reflection serves this encoded set; tests and tools can load it too.
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("giao_descriptor.bin"),
        file_descriptor_set.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(env::var_os("CARGO_FEATURE_CLIENT").is_some())
        .build_server(env::var_os("CARGO_FEATURE_SERVER").is_some())
        // Services implement RPCs as their issues land; the rest answer Unimplemented.
        .generate_default_stubs(true)
        .include_file("_includes.rs")
        .compile_fds(file_descriptor_set)?;
    Ok(())
}

fn collect_protos(
    root: &Path,
    dir: &Path,
    files: &mut Vec<String>,
) -> Result<(), Box<dyn std::error::Error>> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(root, &path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            let relative = path.strip_prefix(root)?;
            files.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}
