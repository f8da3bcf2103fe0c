//! The reporting binary: `giao-reporting [--config FILE]`, settings also from `GIAO_*`.

fn main() -> std::process::ExitCode {
    giao_platform::service::main(giao_reporting::SERVICE, giao_reporting::serve)
}
