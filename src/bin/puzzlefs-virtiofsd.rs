//! `puzzlefs-virtiofsd`: parse the command line, set up logging and signals, run the daemon.
//! Errors become one line on stderr and a non-zero exit status.

use std::io::Write;
use std::process::ExitCode;

use pfs::daemon::{self, Command, Config, SocketSpec, SyslogLogger};

fn main() -> ExitCode {
    let config = match daemon::parse_args(std::env::args_os()) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help(text) | Command::Version(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::PrintCapabilities(json)) => {
            println!("{json}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("puzzlefs-virtiofsd: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    if let Err(e) = stop_on_signals(&config) {
        eprintln!("puzzlefs-virtiofsd: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    let ready = || {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{}", daemon::READY_LINE);
        let _ = err.flush();
    };
    match daemon::run(&config, ready) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if config.syslog {
                log::error!("{e}");
            }
            eprintln!("puzzlefs-virtiofsd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    if config.syslog {
        let _ = SyslogLogger::new("puzzlefs-virtiofsd", config.log_level).install();
        return;
    }
    env_logger::Builder::new()
        .filter_level(config.log_level)
        .parse_env("RUST_LOG")
        .format_timestamp_millis()
        .init();
}

/// SIGTERM and SIGINT end the daemon at once with status 0: it holds no state worth saving
/// (everything it serves is read-only), so the only cleanup is the socket file it created.
fn stop_on_signals(config: &Config) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    let socket = match &config.socket {
        SocketSpec::Path(p) => Some(p.clone()),
        SocketSpec::Fd(_) => None,
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                log::info!("signal {sig}: stopping");
                if let Some(p) = &socket {
                    let _ = std::fs::remove_file(p);
                }
                std::process::exit(0);
            }
        })?;
    Ok(())
}
