//! Structured logs: `tracing` to stderr, as text or JSON lines (`--log-format json`), filtered
//! by `RUST_LOG` (default `info`), coloured only when stderr is a terminal.
//!
//! The filter: `RUST_LOG` in the `target=level,...` form (a bare level is the default for
//! every target) is read as a static [`Targets`] filter; only a value that needs more —
//! span or field directives such as `[request{path=/events}]=trace` — gets an [`EnvFilter`].
//! The difference is per request: an `EnvFilter` looks up every span it is told about in a
//! map behind a lock (to scope dynamic directives), on every enter and exit of the request
//! span, which `scripts/callgrind-requests` measured at a few thousand instructions per
//! request; a static filter decides once per callsite. What is logged is the same.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::cli::LogFormat;

/// The log filter for a `RUST_LOG` value (`None`: unset): static when the value allows it.
// Built once at start-up and moved into the subscriber: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Filter {
    Static(Targets),
    Dynamic(EnvFilter),
}

impl Filter {
    fn from_env(value: Option<&str>) -> Filter {
        let value = value
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .unwrap_or("info");
        // `[`, `{` and `}` only appear in span and field directives, which need EnvFilter.
        if !value.contains(['[', '{', '}'])
            && let Ok(targets) = value.parse::<Targets>()
        {
            return Filter::Static(targets);
        }
        Filter::Dynamic(EnvFilter::try_new(value).unwrap_or_else(|_| EnvFilter::new("info")))
    }
}

/// Installs the global subscriber (once; later calls are ignored, which tests rely on).
pub fn init(format: LogFormat) {
    let value = std::env::var("RUST_LOG").ok();
    // Colours only for a person at a terminal: a log file or journal gets plain text (and the
    // request span's fields are formatted without escape codes, a third of its cost).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match (Filter::from_env(value.as_deref()), format) {
        (Filter::Static(targets), LogFormat::Text) => tracing_subscriber::registry()
            .with(fmt)
            .with(targets)
            .try_init(),
        (Filter::Static(targets), LogFormat::Json) => tracing_subscriber::registry()
            .with(fmt.json().flatten_event(true))
            .with(targets)
            .try_init(),
        (Filter::Dynamic(filter), LogFormat::Text) => tracing_subscriber::registry()
            .with(fmt)
            .with(filter)
            .try_init(),
        (Filter::Dynamic(filter), LogFormat::Json) => tracing_subscriber::registry()
            .with(fmt.json().flatten_event(true))
            .with(filter)
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;
    use tracing::level_filters::LevelFilter;

    fn is_static(value: Option<&str>) -> Option<Targets> {
        match Filter::from_env(value) {
            Filter::Static(targets) => Some(targets),
            Filter::Dynamic(_) => None,
        }
    }

    #[test]
    fn plain_levels_and_targets_get_the_static_filter_with_the_same_meaning() {
        let default = is_static(None).expect("unset is static");
        assert!(default.would_enable("logbook::app", &Level::INFO));
        assert!(!default.would_enable("logbook::app", &Level::DEBUG));
        assert_eq!(default.default_level(), Some(LevelFilter::INFO));

        let warn = is_static(Some("warn")).expect("a level is static");
        assert!(!warn.would_enable("tower_http::trace", &Level::INFO));
        assert!(warn.would_enable("eventlog::writer", &Level::WARN));

        let mixed = is_static(Some("info,eventlog=debug,sqlx=off")).expect("targets are static");
        assert!(mixed.would_enable("eventlog::writer", &Level::DEBUG));
        assert!(!mixed.would_enable("sqlx::query", &Level::ERROR));
        assert!(mixed.would_enable("hyper", &Level::INFO));
        assert!(!mixed.would_enable("hyper", &Level::DEBUG));
    }

    #[test]
    fn span_and_field_directives_get_the_env_filter() {
        assert!(is_static(Some("[request{path=/events}]=trace")).is_none());
        assert!(is_static(Some("info,[request]=debug")).is_none());
    }
}
