//! The assignment binary: `giao-assignment [--config FILE]`, settings also from `GIAO_*`.

fn main() -> std::process::ExitCode {
    giao_platform::service::main(giao_assignment::SERVICE, giao_assignment::serve)
}
