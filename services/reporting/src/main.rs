//! The reporting binary: `giao-reporting [--config FILE]` serves; `giao-reporting rebuild
//! [--from bus|message-store] [--config FILE]` folds the bus stream (the default) or
//! message-store's history into the configured (fresh) database and exits; `giao-reporting
//! rollup [--config FILE]` recomputes the daily roll-ups from the hourly tables and exits.
//! Settings also come from `GIAO_*`.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("rebuild") {
        let source = match giao_reporting::RebuildSource::from_args(&args) {
            Ok(source) => source,
            Err(error) => {
                eprintln!("{}: {error}", giao_reporting::SERVICE);
                return std::process::ExitCode::FAILURE;
            }
        };
        return giao_platform::service::main(giao_reporting::SERVICE, move |config, shutdown| {
            giao_reporting::rebuild(config, source, shutdown)
        });
    }
    if args.get(1).map(String::as_str) == Some("rollup") {
        return giao_platform::service::main(giao_reporting::SERVICE, giao_reporting::rollup);
    }
    giao_platform::service::main(giao_reporting::SERVICE, giao_reporting::serve)
}
