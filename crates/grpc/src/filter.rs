//! KurrentDB's server-side filters on `$all` reads and subscriptions.
//!
//! Prefix filters, and expressions the `regex` crate accepts, are handed to the store
//! ([`events::Filter`], so a backend can skip data it does not need). KurrentDB's expressions
//! are .NET ones, and clients use lookarounds (the Python client's default `read_all` filter
//! excludes system events with a negative lookahead, `^(?!\$)`), which `regex` rejects: those
//! run here, in the face, with `fancy-regex` (backtracking, with its default limit), over
//! unfiltered pages.

use events::{Filter, FilterTarget, RecordedEvent};
use tonic::Status;

use crate::proto::streams::read_req::options::FilterOptions;
use crate::proto::streams::read_req::options::filter_options;

/// A filter as the face applies it.
#[derive(Debug, Clone)]
pub enum EventFilter {
    /// Applied by the store.
    Store(Filter),
    /// Applied here, after the store's read.
    Backtracking {
        /// What is matched.
        target: FilterTarget,
        /// The expression.
        regex: fancy_regex::Regex,
    },
}

impl EventFilter {
    /// The filter the store applies (`None`: the store reads everything).
    pub fn store_filter(&self) -> Option<Filter> {
        match self {
            EventFilter::Store(filter) => Some(filter.clone()),
            EventFilter::Backtracking { .. } => None,
        }
    }

    /// Whether `event` passes (always after the store's own filter).
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        match self {
            EventFilter::Store(_) => true,
            EventFilter::Backtracking { target, regex } => {
                let field = match target {
                    FilterTarget::Stream => event.stream.as_str(),
                    FilterTarget::EventType => event.event_type.as_str(),
                };
                // An expression that exceeds the backtracking limit matches nothing.
                regex.is_match(field).unwrap_or(false)
            }
        }
    }
}

/// The filter of a read request; `None` for no filter.
pub fn from_options(options: &FilterOptions) -> Result<Option<EventFilter>, Status> {
    let (target, expression) = match &options.filter {
        Some(filter_options::Filter::StreamIdentifier(expression)) => {
            (FilterTarget::Stream, expression)
        }
        Some(filter_options::Filter::EventType(expression)) => {
            (FilterTarget::EventType, expression)
        }
        None => return Ok(None),
    };
    if !expression.prefix.is_empty() {
        return Filter::prefixes(target, expression.prefix.clone())
            .map(|filter| Some(EventFilter::Store(filter)))
            .map_err(crate::status::from_error);
    }
    if expression.regex.is_empty() {
        return Err(Status::invalid_argument(
            "a filter needs a prefix or a regular expression",
        ));
    }
    if let Ok(filter) = Filter::regex(target, &expression.regex) {
        return Ok(Some(EventFilter::Store(filter)));
    }
    fancy_regex::Regex::new(&expression.regex)
        .map(|regex| Some(EventFilter::Backtracking { target, regex }))
        .map_err(|e| {
            Status::invalid_argument(format!(
                "invalid filter expression {:?}: {e}",
                expression.regex
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::streams::read_req::options::filter_options::Expression;

    fn event(stream: &str, event_type: &str) -> RecordedEvent {
        RecordedEvent {
            id: uuid::Uuid::nil(),
            stream: stream.into(),
            version: 0,
            position: 0,
            event_type: event_type.into(),
            data: vec![],
            metadata: None,
            content_type: events::ContentType::Json,
            recorded_at_micros: 0,
        }
    }

    fn by_type(regex: &str) -> FilterOptions {
        FilterOptions {
            filter: Some(filter_options::Filter::EventType(Expression {
                regex: regex.into(),
                prefix: vec![],
            })),
            window: None,
            checkpoint_interval_multiplier: 1,
        }
    }

    #[test]
    fn a_negative_lookahead_excludes_system_events() {
        // The shape of the Python client's default exclude filter.
        let filter = from_options(&by_type(r"^(?!(\$.*|PersistentConfig\d+|Result)$).*"))
            .unwrap()
            .unwrap();
        assert!(matches!(filter, EventFilter::Backtracking { .. }));
        assert!(filter.matches(&event("s", "OrderPlaced")));
        assert!(!filter.matches(&event("s", "$metadata")));
        assert!(!filter.matches(&event("s", "PersistentConfig1")));
    }

    #[test]
    fn plain_expressions_and_prefixes_go_to_the_store_and_bad_ones_are_invalid() {
        assert!(matches!(
            from_options(&by_type("^Order")).unwrap(),
            Some(EventFilter::Store(_))
        ));
        assert_eq!(
            from_options(&by_type("(")).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
