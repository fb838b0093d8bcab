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

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::{RecordFields, VisitOutput as _};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultFields, DefaultVisitor, Writer};
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
    let fmt = || {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
    };
    let _ = match (Filter::from_env(value.as_deref()), format) {
        (Filter::Static(targets), LogFormat::Text) => tracing_subscriber::registry()
            .with(fmt().fmt_fields(PlainFields))
            .with(targets)
            .try_init(),
        (Filter::Static(targets), LogFormat::Json) => tracing_subscriber::registry()
            .with(fmt().json().flatten_event(true))
            .with(targets)
            .try_init(),
        (Filter::Dynamic(filter), LogFormat::Text) => tracing_subscriber::registry()
            .with(fmt().fmt_fields(PlainFields))
            .with(filter)
            .try_init(),
        (Filter::Dynamic(filter), LogFormat::Json) => tracing_subscriber::registry()
            .with(fmt().json().flatten_event(true))
            .with(filter)
            .try_init(),
    };
}

/// The text format's fields, written as tracing-subscriber's `DefaultFields` writes them
/// (`name=value`, strings quoted as `Debug` quotes them), minus its cost where nothing needs
/// it: without colours, a plain field goes straight to the writer instead of through the
/// colour wrappers (`italic().paint(name)`, `dimmed().paint("=")`), and a string of printable
/// ASCII with nothing to escape is quoted without `Debug`'s escaping walk. The request span's
/// three fields cost ~3,800 instructions per request that way (`scripts/callgrind-requests`,
/// issue 15). Messages (escaped against terminal injection), raw identifiers, errors, and
/// everything when colours are on go to `DefaultVisitor` itself; the unit test below checks
/// that both write the same bytes.
struct PlainFields;

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        if writer.has_ansi_escapes() {
            return DefaultFields::new().format_fields(writer, fields);
        }
        // Into a reused buffer first, then into `writer` in one piece: a span's fields go into
        // a fresh `String`, which would otherwise grow (and copy itself) field by field.
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut buffer) => {
                buffer.clear();
                let result = record_plain(Writer::new(&mut *buffer), fields)
                    .and_then(|()| writer.write_str(&buffer));
                if buffer.capacity() > SCRATCH_KEPT_BYTES {
                    *buffer = String::new();
                }
                result
            }
            // Formatting a field logged something: straight to its writer.
            Err(_) => record_plain(writer, fields),
        })
    }
}

/// The largest [`SCRATCH`] buffer kept between uses.
const SCRATCH_KEPT_BYTES: usize = 4096;

thread_local! {
    /// [`PlainFields`]' buffer.
    static SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

fn record_plain<R: RecordFields>(writer: Writer<'_>, fields: R) -> fmt::Result {
    let mut visitor = PlainVisitor {
        writer,
        is_empty: true,
        result: Ok(()),
    };
    fields.record(&mut visitor);
    visitor.result
}

struct PlainVisitor<'a> {
    writer: Writer<'a>,
    is_empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// Fields `DefaultVisitor` treats specially: handed to it.
    fn is_special(name: &str) -> bool {
        name == "message" || name.starts_with("r#")
    }

    fn delegate(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.is_empty = false;
        self.result = visitor.finish();
    }

    fn pad(&mut self) -> fmt::Result {
        if std::mem::replace(&mut self.is_empty, false) {
            Ok(())
        } else {
            self.writer.write_char(' ')
        }
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let plain = value
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
        if Self::is_special(name) || !plain {
            return self.delegate(|visitor| visitor.record_str(field, value));
        }
        self.result = self.pad().and_then(|()| {
            self.writer.write_str(name)?;
            self.writer.write_str("=\"")?;
            self.writer.write_str(value)?;
            self.writer.write_char('"')
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        self.delegate(|visitor| visitor.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        if Self::is_special(name) {
            return self.delegate(|visitor| visitor.record_debug(field, value));
        }
        self.result = self
            .pad()
            .and_then(|()| write!(self.writer, "{name}={value:?}"));
    }
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

    /// Logs the same spans and events through `fields` and returns the text written.
    fn logged<F>(fields: F) -> String
    where
        F: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .without_time()
                .fmt_fields(fields),
        );
        tracing::subscriber::with_default(subscriber, || {
            let error = std::io::Error::other("disk \x1b[31mred\x1b[0m full");
            let id = "0000002a";
            let span = tracing::info_span!(
                "request",
                method = %"GET",
                path = %"/events/0195f2c4-7b1e-7cc0-b2a5-3f6c1d9e8a01?x=1&y='2'",
                request_id = id
            );
            let _entered = span.enter();
            tracing::info!(status = 201, ok = true, ratio = 0.5, "appended");
            tracing::warn!(
                quoted = "say \"hi\"",
                backslash = "C:\\dir",
                tab = "a\tb",
                unicode = "caf\u{e9} \u{1F525}",
                escape = "\x1b[2J",
                empty = "",
                r#type = "OrderPlaced",
                debug = ?vec!["a", "b"],
                "message with \x1b[31m colour and {}", 7
            );
            tracing::error!(
                error = &error as &(dyn std::error::Error + 'static),
                "failed"
            );
            tracing::info!(first = "a", "log.target" = "skipped", last = "z");
            let inner = tracing::info_span!("inner", name = "x y", n = 3u64);
            inner.in_scope(|| tracing::info!("nested"));
            inner.record("n", 4u64);
        });
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn plain_fields_write_what_the_default_fields_write() {
        let plain = logged(PlainFields);
        let default = logged(DefaultFields::new());
        assert!(plain.contains(r#"request_id="0000002a""#), "{plain}");
        assert!(
            plain.contains("\\x1b[31m colour"),
            "messages stay escaped: {plain}"
        );
        assert_eq!(plain, default);
    }

    #[test]
    fn span_and_field_directives_get_the_env_filter() {
        assert!(is_static(Some("[request{path=/events}]=trace")).is_none());
        assert!(is_static(Some("info,[request]=debug")).is_none());
    }
}
