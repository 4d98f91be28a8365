//! Compiles `coalition/v1/*.proto` with protox (pure Rust), so building Coalition never
//! needs a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "coalition/v1/record.proto",
        "coalition/v1/bundle.proto",
        "coalition/v1/sync.proto",
        "coalition/v1/sealed.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["."])?;
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
