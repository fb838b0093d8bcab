//! The `logbook` binary. Placeholder until the serve command lands.

fn main() {
    println!("logbook: not yet implemented");
}
