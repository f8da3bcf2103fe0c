//! The connector binary: `giao-connector [--config FILE]`, settings also from `GIAO_*`.

fn main() -> std::process::ExitCode {
    giao_platform::service::main(giao_connector::SERVICE, giao_connector::serve)
}
