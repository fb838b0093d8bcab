//! Plumbing shared by the Logbook HTTP services.
//!
//! # Layout
//! - [`auth`]: bearer tokens with scopes (`read`, `append`, `admin`, optionally per stream-name
//!   prefix), the token file, [`auth::Access`] checks shared by every face, reloadable at run time.
//! - [`problem`]: RFC 9457 `application/problem+json` bodies; every error answer of every
//!   service is a [`Problem`].
//! - [`middleware`]: the one stack (request ids, the request span, panics, timeouts) the
//!   binary applies around every service's bare router.
//! - [`json`]: JSON object bodies and their 400/413/415 answers; [`paging`]: page sizes.
//! - [`secret`]: [`Secret`], a setting that never prints its value.
//! - [`time`]: RFC 3339 timestamps without a date-time dependency.
//! - [`config`]: [`ConfigProblem`], one line of a start-up check report, naming a
//!   [`config::Setting`] (`ENV (--flag)`); [`config::Checker`] collects them. Services check
//!   all their settings at once and return every problem together, so an operator fixes them
//!   in one pass.
//!
//! This crate knows nothing of events or teams; the services depend on it, never the reverse.

#![warn(missing_docs)]

pub mod auth;
pub mod config;
pub mod json;
pub mod middleware;
pub mod paging;
pub mod problem;
pub mod secret;
pub mod time;

pub use config::{ConfigProblem, ServiceContext};
pub use problem::Problem;
pub use secret::Secret;
