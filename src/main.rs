use std::process::ExitCode;

fn main() -> ExitCode {
    let (cli, given) = bastion::cli::parse();
    bastion::install_crypto();
    bastion::logging::init(cli.global.verbose, cli.global.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(bastion::run(cli, given));
    // A read of the terminal may still be pending on a blocking thread (a shell's stdin):
    // do not wait for a key press to exit.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if !bastion::already_reported(&err) {
                eprintln!("error: {err:#}");
            }
            ExitCode::from(bastion::exit_code(&err))
        }
    }
}
