//! The API server on a real unix socket, spoken to as Kata's Go runtime speaks to nydusd:
//! raw HTTP/1.1 over `std::os::unix::net::UnixStream`, the exact requests Kata sends, and
//! the hostile ones nobody should send. The `Control` behind it is a recording stand-in for
//! the mount table (see `support.rs`).

mod hostile;
mod kata;
mod refusals;
mod support;
