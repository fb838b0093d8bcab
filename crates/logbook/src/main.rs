//! The `logbook` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use logbook::cli::{Cli, Command, EventsTool, TokensCommand};

/// mimalloc rather than glibc's malloc: serving allocates small, short-lived buffers per
/// request and per event (h2 frames, prost messages, JSON), and glibc's arenas spent a quarter
/// of the gRPC read and BatchAppend profiles in malloc/free and their consolidation
/// (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(serve) => serve_main((*serve).into_config()),
        Command::Events(EventsTool::Verify { dir }) => logbook::tools::verify(&dir),
        Command::Events(EventsTool::Repair { dir }) => logbook::tools::repair(&dir),
        Command::Events(EventsTool::Dump { dir }) => logbook::tools::dump(&dir),
        Command::Events(EventsTool::Scavenge { dir }) => logbook::tools::scavenge(&dir),
        Command::Events(EventsTool::Backup { data_dir, to }) => {
            logbook::tools::backup(&data_dir, &to)
        }
        Command::Bench(args) => logbook::bench::main(args),
        Command::Tokens(TokensCommand::New {
            name,
            scope,
            prefix,
        }) => logbook::tokens::new(&name, &scope, prefix.as_deref()),
    }
}

fn serve_main(config: logbook::ServeConfig) -> ExitCode {
    logbook::telemetry::init(config.common.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("logbook: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let app = match logbook::App::build(config).await {
            Ok(app) => app,
            Err(error) => {
                eprint!("{error}");
                return ExitCode::from(2);
            }
        };
        let shutdown = logbook::shutdown_signal();
        if let Some(banner) = app.dev_banner() {
            println!("{banner}");
        }
        if let Some(grpc) = app.grpc_addr() {
            println!("logbook: gRPC on {grpc}");
        }
        println!(
            "logbook: listening on {}://{}",
            app.scheme(),
            app.local_addr()
        );
        match app.run(shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("logbook: {error:#}");
                ExitCode::FAILURE
            }
        }
    })
}
