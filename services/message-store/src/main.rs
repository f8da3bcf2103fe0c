//! The message-store binary: `giao-message-store [--config FILE]`, settings also from `GIAO_*`.

fn main() -> std::process::ExitCode {
    giao_platform::service::main(giao_message_store::SERVICE, giao_message_store::serve)
}
