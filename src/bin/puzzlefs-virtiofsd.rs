//! `puzzlefs-virtiofsd`: parse the command line, set up logging, start the (sandboxed) daemon,
//! handle signals, serve. Errors become one line on stderr and a non-zero exit status.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitCode;

use puzzlefs_virtiofsd::daemon::{self, Command, Config, DaemonError, Started, SyslogLogger};

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
    match run(&config) {
        Ok(code) => code,
        Err(e) => {
            if config.syslog {
                log::error!("{e}");
            }
            eprintln!("puzzlefs-virtiofsd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: &Config) -> Result<ExitCode, DaemonError> {
    let daemon = match daemon::start(config)? {
        Started::Supervisor(supervisor) => return Ok(exit_code(supervisor.wait()?)),
        Started::Daemon(daemon) => daemon,
    };
    stop_on_signals(daemon.socket_files().to_vec()).map_err(DaemonError::Workers)?;
    let ready = || {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{}", daemon::READY_LINE);
        let _ = err.flush();
    };
    daemon.serve(ready)?;
    Ok(ExitCode::SUCCESS)
}

/// The sandboxed daemon's status as ours: its exit code, or 128 + the signal that killed it.
fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
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

/// SIGTERM and SIGINT end the daemon at once with status 0: what guests wrote is on the host
/// already, so the only cleanup is the socket files it created.
fn stop_on_signals(socket_files: Vec<PathBuf>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                log::info!("signal {sig}: stopping");
                for p in &socket_files {
                    let _ = std::fs::remove_file(p);
                }
                std::process::exit(0);
            }
        })?;
    Ok(())
}
