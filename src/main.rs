use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = bastion::cli::Cli::parse();
    bastion::logging::init(cli.global.verbose, cli.global.quiet);
    match bastion::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(bastion::exit_code(&err))
        }
    }
}
