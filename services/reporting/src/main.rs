//! The reporting binary: `giao-reporting [--config FILE]` serves; `giao-reporting rebuild
//! [--config FILE]` replays the bus into the configured (fresh) database and exits. Settings
//! also come from `GIAO_*`.

fn main() -> std::process::ExitCode {
    if std::env::args().nth(1).as_deref() == Some("rebuild") {
        return giao_platform::service::main(giao_reporting::SERVICE, giao_reporting::rebuild);
    }
    giao_platform::service::main(giao_reporting::SERVICE, giao_reporting::serve)
}
