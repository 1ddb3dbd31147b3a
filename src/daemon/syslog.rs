//! A `log` back end writing to syslog(3), for `--syslog` (Kata's Go runtime passes it). When
//! no syslog daemon listens, messages are dropped, as syslog(3) does.

use std::ffi::{CStr, CString};

/// Logs through syslog(3) under the given identity, facility LOG_DAEMON.
pub struct SyslogLogger {
    level: log::LevelFilter,
}

impl SyslogLogger {
    /// Opens the syslog connection.
    pub fn new(ident: &str, level: log::LevelFilter) -> SyslogLogger {
        // openlog(3) keeps the pointer, so the identity string lives for the whole process.
        let ident: &'static CStr = Box::leak(
            CString::new(ident.replace('\0', ""))
                .unwrap_or_default()
                .into_boxed_c_str(),
        );
        // SAFETY: `ident` is a valid NUL-terminated string that is never freed, so the pointer
        // openlog keeps stays valid; the other arguments are plain flags.
        unsafe {
            libc::openlog(
                ident.as_ptr(),
                libc::LOG_PID | libc::LOG_NDELAY,
                libc::LOG_DAEMON,
            )
        };
        SyslogLogger { level }
    }

    /// Installs this logger as the process-wide `log` back end.
    pub fn install(self) -> Result<(), log::SetLoggerError> {
        let level = self.level;
        log::set_boxed_logger(Box::new(self))?;
        log::set_max_level(level);
        Ok(())
    }
}

fn priority(level: log::Level) -> libc::c_int {
    match level {
        log::Level::Error => libc::LOG_ERR,
        log::Level::Warn => libc::LOG_WARNING,
        log::Level::Info => libc::LOG_INFO,
        log::Level::Debug | log::Level::Trace => libc::LOG_DEBUG,
    }
}

impl log::Log for SyslogLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let text = format!("{}: {}", record.target(), record.args()).replace('\0', "\\0");
        let Ok(msg) = CString::new(text) else { return };
        // SAFETY: the format is a constant "%s" and `msg` a valid NUL-terminated string, so
        // syslog reads exactly one string argument.
        unsafe { libc::syslog(priority(record.level()), c"%s".as_ptr(), msg.as_ptr()) };
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Log;

    #[test]
    fn logs_without_a_syslog_daemon() {
        let logger = SyslogLogger::new("pfs-test", log::LevelFilter::Info);
        assert!(logger.enabled(&log::Metadata::builder().level(log::Level::Warn).build()));
        assert!(!logger.enabled(&log::Metadata::builder().level(log::Level::Debug).build()));
        logger.log(
            &log::Record::builder()
                .args(format_args!("hello \0 world"))
                .level(log::Level::Info)
                .build(),
        );
        assert_eq!(priority(log::Level::Trace), libc::LOG_DEBUG);
    }
}
