//! `logbook events verify|repair|dump`: offline tools over an event log directory.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use eventstore::model::EventBody;

/// Events read per step while dumping.
const DUMP_BATCH_EVENTS: usize = 1000;

/// Prints the engine's verify report; exit 1 when the log is damaged, 2 when it cannot be read.
pub fn verify(dir: &Path) -> ExitCode {
    match eventlog::tools::verify(dir) {
        Ok(report) => {
            print!("{report}");
            if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(error) => {
            eprintln!("logbook events verify: {error}");
            ExitCode::from(2)
        }
    }
}

/// Prints the engine's repair report.
pub fn repair(dir: &Path) -> ExitCode {
    match eventlog::tools::repair(dir) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("logbook events repair: {error}");
            ExitCode::from(2)
        }
    }
}

/// Scavenges a stopped store and prints what it removed; exit 2 when it fails (the store is
/// left whole: see `eventlog::scavenge`).
pub fn scavenge(dir: &Path) -> ExitCode {
    if !dir.is_dir() {
        eprintln!(
            "logbook events scavenge: {} is not a directory",
            dir.display()
        );
        return ExitCode::from(2);
    }
    match eventlog::scavenge::scavenge_offline(dir) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("logbook events scavenge: {error}");
            ExitCode::from(2)
        }
    }
}

/// Copies `<data_dir>/events` to `<to>/events` beside a running server (see
/// [`eventlog::backup`]); exit 2 when it fails (a partial copy stays in `<to>/events.partial`
/// and is replaced by the next attempt).
pub fn backup(data_dir: &Path, to: &Path) -> ExitCode {
    let source = data_dir.join(eventstore::EVENTS_DIR);
    let dest = to.join(eventstore::EVENTS_DIR);
    let result = std::fs::create_dir_all(to)
        .map_err(|e| eventlog::Error::Io {
            path: to.to_path_buf(),
            source: e,
        })
        .and_then(|()| eventlog::backup::backup(&source, &dest));
    match result {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("logbook events backup: {error}");
            ExitCode::from(2)
        }
    }
}

/// Prints every event as one JSON line, in position order. Reads the log read-only (no lock,
/// nothing cut or written), so it works beside a running server; it prints the valid prefix
/// and says on stderr if damage follows it.
pub fn dump(dir: &Path) -> ExitCode {
    match try_dump(dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("logbook events dump: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn try_dump(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        anyhow::bail!("{} is not a directory", dir.display());
    }
    let reader = eventlog::tools::LogReader::open(dir)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut position = 0;
    loop {
        let events = reader.read(position, DUMP_BATCH_EVENTS)?;
        let Some(last) = events.last() else { break };
        position = last.position + 1;
        for event in events {
            let body = EventBody::try_from(event).map_err(|e| anyhow::anyhow!("{e}"))?;
            serde_json::to_writer(&mut out, &body)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    if let Some(damage) = &reader.damage {
        eprintln!(
            "logbook events dump: the log continues with damage in {} at byte {} ({}); `logbook events verify` tells more",
            damage.path.display(),
            damage.offset,
            damage.reason
        );
    }
    Ok(())
}
