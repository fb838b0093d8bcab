//! `logbook tokens new --name N --scope S [--prefix P]`: a fresh token, printed once, and the
//! line of `EVENTS_TOKENS_FILE` that accepts it (which holds only the token's SHA-256).

use std::process::ExitCode;

use web::auth::{Scope, TokenEntry};

/// Prints a new token and its token-file line on stdout; lines starting with `#` explain.
pub fn new(name: &str, scope: &str, prefix: Option<&str>) -> ExitCode {
    let Some(scope) = Scope::parse(scope) else {
        eprintln!("logbook: unknown scope {scope:?}; use read, append or admin");
        return ExitCode::from(2);
    };
    let token = match web::auth::new_token() {
        Ok(token) => token,
        Err(error) => {
            eprintln!("logbook: the OS random number generator failed: {error}");
            return ExitCode::FAILURE;
        }
    };
    let entry = match TokenEntry::for_token(&token, name, scope, prefix) {
        Ok(entry) => entry,
        Err(message) => {
            eprintln!("logbook: {message}");
            return ExitCode::from(2);
        }
    };
    println!("# the token (shown only now; give it to the client, it is stored nowhere):");
    println!("{token}");
    println!("# the line to add to EVENTS_TOKENS_FILE (then SIGHUP the server, or restart it):");
    println!("{}", entry.line());
    ExitCode::SUCCESS
}
