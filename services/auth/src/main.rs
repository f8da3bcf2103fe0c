//! The auth binary: `giao-auth [--config FILE]`, settings also from `GIAO_*`.

fn main() -> std::process::ExitCode {
    giao_platform::service::main(giao_auth::SERVICE, giao_auth::serve)
}
