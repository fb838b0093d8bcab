//! Bearer tokens with scopes: who may read, append or administer which streams.
//!
//! The types here know nothing of HTTP routes or gRPC methods, so every face of the event store
//! (HTTP JSON and SSE today; the KurrentDB-compatible gRPC face later) enforces the same rules
//! with the same code:
//!
//! - [`Authenticator`] holds the accepted tokens (one `EVENTS_TOKEN` and/or the lines of
//!   `EVENTS_TOKENS_FILE`) as SHA-256 hashes, turns a presented token into an [`Access`], and
//!   re-reads the file on [`Authenticator::reload`] (the binary calls it on SIGHUP). A reload
//!   that fails keeps the previous tokens.
//! - [`Access`] is what one request may do: [`Access::can_read`],
//!   [`Access::check_read`], [`Access::check_append`], [`Access::check_admin`]. A refusal is a
//!   [`Denied`], which names the missing scope and never another token.
//!
//! HTTP answers a missing or unknown token 401 and a [`Denied`] 403 ([`Denied::to_problem`]).
//! The gRPC face maps the same outcomes to `UNAUTHENTICATED` and `PERMISSION_DENIED` (with the
//! same detail text), taking the token from `authorization: Bearer <token>` or from the password
//! of Basic credentials.
//!
//! # The token file
//! One token a line: `name scope[:stream-prefix] sha256-hex-of-token`. `#` starts a comment,
//! blank lines are ignored. The file holds only hashes, never a token.
//! ```text
//! # who        scope            SHA-256 of the token
//! projector    read             9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//! orders-api   append:orders-   60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752
//! ops          admin            fd61a03af4f77d870fc21e05e7e80678095c92d808cfb3b5c279ee04c74aca13
//! ```
//!
//! # Why hashes, compared in constant time
//! A leaked file does not leak a token: tokens are 256 random bits, so their SHA-256 cannot be
//! inverted. The presented token is hashed once and compared with every entry's hash without an
//! early exit (every entry, every byte), so timing tells an attacker neither which byte nor which
//! entry differed.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::http::StatusCode;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::Problem;
use crate::Secret;

/// Random bytes in a token made by [`new_token`] (256 bits).
pub const TOKEN_RANDOM_BYTES: usize = 32;
/// Longest token file accepted; a larger one is refused, not half-read.
pub const TOKENS_FILE_MAX_BYTES: u64 = 1024 * 1024;

/// What a token may do. Each scope includes the ones before it: `append` may also read,
/// `admin` may also append and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Read events, streams and subscriptions.
    Read,
    /// Append events (and read).
    Append,
    /// Delete, tombstone, change stream metadata, scavenge (and append, read).
    Admin,
}

impl Scope {
    /// The scope's name as written in the token file.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Append => "append",
            Scope::Admin => "admin",
        }
    }

    /// Parses `read`, `append` or `admin`.
    pub fn parse(raw: &str) -> Option<Scope> {
        match raw {
            "read" => Some(Scope::Read),
            "append" => Some(Scope::Append),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller: the token's name (for logs; never the token), its scope and the
/// stream-name prefix it is limited to, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The name from the token file (`EVENTS_TOKEN` for the single token).
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// `Some`: only streams whose name starts with this.
    pub prefix: Option<String>,
}

impl Principal {
    fn covers(&self, stream: &str) -> bool {
        self.prefix
            .as_deref()
            .is_none_or(|prefix| stream.starts_with(prefix))
    }
}

/// What one request may do: everything (the API is open: no token configured) or what an
/// authenticated [`Principal`] may.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No token is configured (development, or `EVENTS_AUTH=none`).
    Open,
    /// A valid token was presented.
    Token(Arc<Principal>),
}

impl Access {
    /// `true` when events of `stream` may be read. `$all` reads (pages of the whole log,
    /// subscriptions) use this to skip the events of streams outside the token's prefix.
    pub fn can_read(&self, stream: &str) -> bool {
        self.check(Scope::Read, Some(stream)).is_ok()
    }

    /// `true` when every stream may be read (no prefix), so `$all` needs no filtering.
    pub fn reads_everything(&self) -> bool {
        match self {
            Access::Open => true,
            Access::Token(principal) => principal.prefix.is_none(),
        }
    }

    /// Reading `stream` (its events, its state, its metadata).
    pub fn check_read(&self, stream: &str) -> Result<(), Denied> {
        self.check(Scope::Read, Some(stream))
    }

    /// Appending to `stream`.
    pub fn check_append(&self, stream: &str) -> Result<(), Denied> {
        self.check(Scope::Append, Some(stream))
    }

    /// Administering `stream` (delete, tombstone, metadata).
    pub fn check_admin_stream(&self, stream: &str) -> Result<(), Denied> {
        self.check(Scope::Admin, Some(stream))
    }

    /// Store-wide administration (scavenge): needs `admin` without a prefix.
    pub fn check_admin(&self) -> Result<(), Denied> {
        self.check(Scope::Admin, None)
    }

    /// The name of the token, for logs (`None` when the API is open).
    pub fn name(&self) -> Option<&str> {
        match self {
            Access::Open => None,
            Access::Token(principal) => Some(&principal.name),
        }
    }

    fn check(&self, needed: Scope, stream: Option<&str>) -> Result<(), Denied> {
        let Access::Token(principal) = self else {
            return Ok(());
        };
        let covered = match stream {
            Some(stream) => principal.covers(stream),
            None => principal.prefix.is_none(),
        };
        if principal.scope >= needed && covered {
            Ok(())
        } else {
            Err(Denied {
                missing: needed,
                stream: stream.map(str::to_owned),
            })
        }
    }
}

/// A refusal: the token is valid but lacks `missing` (for `stream`, when one is named).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The scope the operation needs.
    pub missing: Scope,
    /// The stream the operation is about; `None` for store-wide operations.
    pub stream: Option<String>,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.stream {
            Some(stream) => write!(
                f,
                "this token lacks the `{}` scope for stream {stream:?}",
                self.missing
            ),
            None => write!(
                f,
                "this token lacks the `{}` scope for the whole store",
                self.missing
            ),
        }
    }
}

impl std::error::Error for Denied {}

impl Denied {
    /// 403 `/problems/forbidden` with `missing_scope` (and `stream`) members.
    pub fn to_problem(&self) -> Problem {
        let mut problem = Problem::new(StatusCode::FORBIDDEN, "forbidden", self.to_string())
            .with("missing_scope", self.missing.as_str());
        if let Some(stream) = &self.stream {
            problem = problem.with("stream", stream.clone());
        }
        problem
    }
}

/// Why a request was not authenticated (answered 401 / `UNAUTHENTICATED`). Deliberately one
/// kind: a missing, malformed and unknown token look the same from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unauthenticated;

impl Unauthenticated {
    /// 401 `/problems/unauthorized` with `WWW-Authenticate: Bearer`.
    pub fn to_problem(self) -> Problem {
        Problem::unauthorized("this route needs `Authorization: Bearer <token>` with a valid token")
    }
}

/// The SHA-256 of a token, as stored in the token file.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Lowercase hex of a hash.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn parse_hex_32(raw: &str) -> Option<[u8; 32]> {
    if raw.len() != 64 || !raw.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (index, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&raw[index * 2..index * 2 + 2], 16).ok()?;
    }
    Some(out)
}

/// A fresh token: [`TOKEN_RANDOM_BYTES`] from the OS CSPRNG, URL-safe base64 without padding.
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; TOKEN_RANDOM_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// One accepted token: who, what, and the hash of the token.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenEntry {
    /// Who holds it (logged on use; never the token).
    pub principal: Arc<Principal>,
    /// SHA-256 of the token.
    pub hash: [u8; 32],
}

impl fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenEntry")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl TokenEntry {
    /// The token file line for this entry: `name scope[:prefix] sha256hex`.
    pub fn line(&self) -> String {
        let principal = &self.principal;
        let scope = match &principal.prefix {
            Some(prefix) => format!("{}:{prefix}", principal.scope),
            None => principal.scope.to_string(),
        };
        format!("{} {scope} {}", principal.name, hex(&self.hash))
    }

    /// The entry for `token` with this name, scope and prefix; checks name and prefix the way
    /// the file parser does.
    pub fn for_token(
        token: &str,
        name: &str,
        scope: Scope,
        prefix: Option<&str>,
    ) -> Result<TokenEntry, String> {
        check_word("the name", name)?;
        if let Some(prefix) = prefix {
            check_word("the prefix", prefix)?;
        }
        Ok(TokenEntry {
            principal: Arc::new(Principal {
                name: name.to_owned(),
                scope,
                prefix: prefix.map(str::to_owned),
            }),
            hash: hash_token(token),
        })
    }
}

fn check_word(what: &str, word: &str) -> Result<(), String> {
    if word.is_empty() || word.chars().any(|c| c.is_whitespace() || c == '#') {
        Err(format!(
            "{what} {word:?} must be non-empty, without spaces or `#`"
        ))
    } else {
        Ok(())
    }
}

/// Parses a token file; every bad line is reported (`line N: what is wrong`), so one pass fixes
/// them all. Two lines with one hash are refused: the token would have two meanings.
pub fn parse_tokens_file(text: &str) -> Result<Vec<TokenEntry>, Vec<String>> {
    let mut entries: Vec<TokenEntry> = Vec::new();
    let mut problems = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok(entry) => {
                if entries.iter().any(|other| other.hash == entry.hash) {
                    problems.push(format!(
                        "line {number}: the same token hash is already on an earlier line"
                    ));
                } else if entries
                    .iter()
                    .any(|other| other.principal.name == entry.principal.name)
                {
                    problems.push(format!(
                        "line {number}: the name {:?} is already on an earlier line",
                        entry.principal.name
                    ));
                } else {
                    entries.push(entry);
                }
            }
            Err(message) => problems.push(format!("line {number}: {message}")),
        }
    }
    if problems.is_empty() {
        Ok(entries)
    } else {
        Err(problems)
    }
}

fn parse_line(line: &str) -> Result<TokenEntry, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [name, scope, hash] = fields[..] else {
        return Err(format!(
            "expected `name scope[:stream-prefix] sha256-hex`, found {} fields",
            fields.len()
        ));
    };
    let (scope, prefix) = match scope.split_once(':') {
        Some((scope, prefix)) => (scope, Some(prefix)),
        None => (scope, None),
    };
    let scope = Scope::parse(scope).ok_or_else(|| {
        format!("unknown scope {scope:?}; use read, append or admin (optionally `:prefix`)")
    })?;
    if prefix == Some("") {
        return Err("an empty prefix after `:`; omit the `:` for every stream".into());
    }
    let hash = parse_hex_32(hash).ok_or_else(|| {
        "the third field must be the 64 hex digits of the token's SHA-256 (`logbook tokens new` prints the line)".to_owned()
    })?;
    let mut entry = TokenEntry::for_token("", name, scope, prefix)?;
    entry.hash = hash;
    Ok(entry)
}

/// Reads and parses a token file (at most [`TOKENS_FILE_MAX_BYTES`]).
pub fn read_tokens_file(path: &Path) -> Result<Vec<TokenEntry>, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    if size > TOKENS_FILE_MAX_BYTES {
        return Err(format!(
            "{} is {size} bytes, more than the {TOKENS_FILE_MAX_BYTES} a token file may have",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_tokens_file(&text)
        .map_err(|problems| format!("{} has bad lines: {}", path.display(), problems.join("; ")))
}

/// The accepted tokens, swappable at run time.
///
/// Reads take a read lock only long enough to clone an `Arc` of the current list, so a reload
/// never waits for requests and requests never see a half-loaded file.
///
/// Tokens are kept as SHA-256 digests, so checking a presented token means hashing it: about
/// 3,500 instructions, a twentieth of a whole read by id (`scripts/callgrind-requests`). A
/// token that passed that check is remembered by a keyed 128-bit SipHash (two keys drawn at
/// random when the list is loaded, never leaving the process; not the token itself), so the
/// next request with it costs two short hashes. Guessing an entry of that memory from outside
/// is as hard as guessing 128 random bits, since the keys are secret. Only tokens that passed
/// are remembered (at most [`VERIFIED_TOKENS_KEPT`]), and a reload starts with an empty memory,
/// so a token removed from the file stops working at the reload, as before.
pub struct Authenticator {
    /// The single `EVENTS_TOKEN`, as an `admin` entry without prefix.
    single: Option<TokenEntry>,
    /// `EVENTS_TOKENS_FILE`, re-read by [`reload`](Self::reload).
    file: Option<PathBuf>,
    entries: RwLock<Arc<Tokens>>,
}

/// Most distinct tokens remembered as verified per loaded list.
pub const VERIFIED_TOKENS_KEPT: usize = 1024;

/// One loaded list of tokens and the memory of the tokens verified against it.
struct Tokens {
    list: Vec<TokenEntry>,
    keys: (RandomState, RandomState),
    verified: RwLock<HashMap<[u64; 2], Arc<Principal>, MarkHash>>,
}

/// The verified map's hasher: a mark is already a keyed 128-bit hash, so its two halves,
/// folded, are the bucket hash (a third SipHash of it per request would add nothing an
/// attacker lacks).
#[derive(Default, Clone, Copy)]
struct MarkHash;

impl BuildHasher for MarkHash {
    type Hasher = MarkHasher;

    fn build_hasher(&self) -> MarkHasher {
        MarkHasher(0)
    }
}

/// See [`MarkHash`].
struct MarkHasher(u64);

impl std::hash::Hasher for MarkHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `[u64; 2]` hashes as its length, then its 16 bytes in one call: two words.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_ne_bytes(word));
        }
    }

    fn write_u64(&mut self, half: u64) {
        self.0 = self.0.rotate_left(32) ^ half;
    }

    fn write_usize(&mut self, _length: usize) {}
}

impl Tokens {
    fn new(list: Vec<TokenEntry>) -> Tokens {
        Tokens {
            list,
            keys: (RandomState::new(), RandomState::new()),
            verified: RwLock::new(HashMap::default()),
        }
    }

    fn len(&self) -> usize {
        self.list.len()
    }

    /// The keyed 128-bit hash under which a verified token is remembered.
    fn mark(&self, token: &str) -> [u64; 2] {
        [
            self.keys.0.hash_one(token.as_bytes()),
            self.keys.1.hash_one(token.as_bytes()),
        ]
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("single", &self.single.is_some())
            .field("file", &self.file)
            .field("entries", &self.current().len())
            .finish()
    }
}

/// The principal name given to the single `EVENTS_TOKEN`.
pub const SINGLE_TOKEN_NAME: &str = "EVENTS_TOKEN";

impl Authenticator {
    /// No token: every request gets [`Access::Open`].
    pub fn open() -> Authenticator {
        Authenticator {
            single: None,
            file: None,
            entries: RwLock::new(Arc::new(Tokens::new(Vec::new()))),
        }
    }

    /// The single token (scope `admin`, every stream) and/or a token file, read now.
    pub fn new(single: Option<&Secret>, file: Option<PathBuf>) -> Result<Authenticator, String> {
        let authenticator = Authenticator::unloaded(single, file);
        authenticator.reload()?;
        Ok(authenticator)
    }

    /// Like [`new`](Self::new) but without reading the file yet: until a
    /// [`reload`](Self::reload) succeeds only the single token is accepted (never an open API).
    pub fn unloaded(single: Option<&Secret>, file: Option<PathBuf>) -> Authenticator {
        let single = single.map(|token| TokenEntry {
            principal: Arc::new(Principal {
                name: SINGLE_TOKEN_NAME.to_owned(),
                scope: Scope::Admin,
                prefix: None,
            }),
            hash: hash_token(token.expose()),
        });
        let entries = RwLock::new(Arc::new(Tokens::new(single.iter().cloned().collect())));
        Authenticator {
            single,
            file,
            entries,
        }
    }

    /// `true` when no token is configured: the API is open.
    pub fn is_open(&self) -> bool {
        self.single.is_none() && self.file.is_none()
    }

    /// The token file, if one is configured.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Re-reads the token file; returns how many tokens are accepted now. On error the previous
    /// tokens stay in force.
    pub fn reload(&self) -> Result<usize, String> {
        let mut entries: Vec<TokenEntry> = self.single.iter().cloned().collect();
        if let Some(file) = &self.file {
            entries.extend(read_tokens_file(file)?);
        }
        let count = entries.len();
        *self.entries.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Tokens::new(entries));
        Ok(count)
    }

    fn current(&self) -> Arc<Tokens> {
        Arc::clone(&self.entries.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The access of a request presenting `token` (`None`: no token presented).
    pub fn authenticate(&self, token: Option<&str>) -> Result<Access, Unauthenticated> {
        if self.is_open() {
            return Ok(Access::Open);
        }
        let token = token.ok_or(Unauthenticated)?;
        let tokens = self.current();
        let mark = tokens.mark(token);
        if let Some(principal) = tokens
            .verified
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&mark)
        {
            return Ok(Access::Token(Arc::clone(principal)));
        }
        let presented = hash_token(token);
        // Look at every entry and every byte: no early exit that timing could reveal.
        let mut found: Option<&TokenEntry> = None;
        for entry in &tokens.list {
            if constant_time_eq(&entry.hash, &presented) {
                found = Some(entry);
            }
        }
        let principal = Arc::clone(&found.ok_or(Unauthenticated)?.principal);
        let mut verified = tokens.verified.write().unwrap_or_else(|e| e.into_inner());
        if verified.len() < VERIFIED_TOKENS_KEPT {
            verified.insert(mark, Arc::clone(&principal));
        }
        Ok(Access::Token(principal))
    }

    /// The access of a request with this `Authorization` header value (`Bearer <token>`).
    pub fn authenticate_header(
        &self,
        authorization: Option<&str>,
    ) -> Result<Access, Unauthenticated> {
        let token = authorization.and_then(bearer_token);
        self.authenticate(token)
    }
}

/// The token of an `Authorization: Bearer <token>` value (the scheme is case-insensitive).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// Compares without an early exit on the first differing byte.
pub fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

/// Whether a presented secret equals the configured one, in time independent of where (and
/// of whether the lengths) they differ: both are hashed first, then the digests compared with
/// [`constant_time_eq`]. The one comparison of a presented bearer token with a configured
/// secret (the teams `ADMIN_TOKEN`; the event API's tokens are kept as digests already).
pub fn secret_matches(presented: &str, expected: &Secret) -> bool {
    constant_time_eq(&hash_token(presented), &hash_token(expected.expose()))
}

/// Middleware: authenticates `Authorization: Bearer <token>` against the [`Authenticator`] and
/// puts the [`Access`] into the request's extensions for handlers to take (as an extractor);
/// answers 401 without calling the handler when the token is missing or unknown. Use it with
/// `Router::route_layer`.
pub fn require_access(authenticator: Arc<Authenticator>) -> RequireAccessLayer {
    RequireAccessLayer { authenticator }
}

/// The layer of [`require_access`]: a plain tower service rather than
/// `axum::middleware::from_fn`, which boxes a future and clones the inner service per request
/// (docs/PERFORMANCE.md, issue 15).
#[derive(Clone)]
pub struct RequireAccessLayer {
    authenticator: Arc<Authenticator>,
}

impl<S> tower::Layer<S> for RequireAccessLayer {
    type Service = RequireAccess<S>;

    fn layer(&self, inner: S) -> RequireAccess<S> {
        RequireAccess {
            inner,
            authenticator: Arc::clone(&self.authenticator),
        }
    }
}

/// See [`require_access`].
#[derive(Clone)]
pub struct RequireAccess<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
}

impl<S> tower::Service<axum::extract::Request> for RequireAccess<S>
where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        >,
{
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = AccessFuture<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: axum::extract::Request) -> Self::Future {
        use axum::response::IntoResponse;
        let authorization = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        match self.authenticator.authenticate_header(authorization) {
            Ok(access) => {
                request.extensions_mut().insert(access);
                AccessFuture::Allowed {
                    future: self.inner.call(request),
                }
            }
            Err(unauthenticated) => AccessFuture::Denied {
                response: Some(unauthenticated.to_problem().into_response()),
            },
        }
    }
}

pub use access_future::AccessFuture;

/// The future of [`RequireAccess`], in a module of its own: `pin_project_lite` cannot carry
/// documentation on enum fields (`Allowed.future` is the inner service's future,
/// `Denied.response` the 401 problem, taken when polled).
mod access_future {
    #![allow(missing_docs)]

    pin_project_lite::pin_project! {
        /// The handler's response, or the 401 problem.
        #[project = AccessFutureProjection]
        pub enum AccessFuture<F> {
            /// Authenticated: the inner service answers.
            Allowed {
                #[pin]
                future: F,
            },
            /// Refused before the handler ran.
            Denied {
                response: Option<axum::response::Response>,
            },
        }
    }

    impl<F> std::future::Future for AccessFuture<F>
    where
        F: std::future::Future<Output = Result<axum::response::Response, std::convert::Infallible>>,
    {
        type Output = Result<axum::response::Response, std::convert::Infallible>;

        fn poll(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Self::Output> {
            match self.project() {
                AccessFutureProjection::Allowed { future } => future.poll(cx),
                AccessFutureProjection::Denied { response } => std::task::Poll::Ready(Ok(response
                    .take()
                    .expect("an AccessFuture is not polled after it completed"))),
            }
        }
    }
}

/// Handlers take the [`Access`] that [`require_access`] found. Without that middleware in
/// front, the extractor fails closed (500, logged) rather than letting the request through.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Access {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Access, Problem> {
        parts.extensions.get::<Access>().cloned().ok_or_else(|| {
            tracing::error!("a handler asked for Access without the require_access middleware");
            Problem::internal()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_hashes_as_its_two_halves_folded() {
        for [a, b] in [
            [1u64, 2],
            [u64::MAX, 0],
            [0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210],
        ] {
            assert_eq!(MarkHash.hash_one([a, b]), a.rotate_left(32) ^ b);
        }
    }

    #[test]
    fn secret_matches_only_the_exact_secret() {
        let secret = Secret::new("s3cret-token".to_owned());
        assert!(secret_matches("s3cret-token", &secret));
        assert!(!secret_matches("s3cret-tokeN", &secret));
        assert!(!secret_matches("s3cret-token-longer", &secret));
        assert!(!secret_matches("", &secret));
    }

    fn authenticator_with(text: &str) -> (tempfile::TempDir, Authenticator) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, text).unwrap();
        let authenticator = Authenticator::new(None, Some(path)).unwrap();
        (dir, authenticator)
    }

    fn line(token: &str, name: &str, scope: Scope, prefix: Option<&str>) -> String {
        TokenEntry::for_token(token, name, scope, prefix)
            .unwrap()
            .line()
    }

    #[test]
    fn a_token_file_line_parses_into_name_scope_prefix_and_hash() {
        let text = format!(
            "# comment\n\n{}  # trailing comment\n{}\n",
            line("t1", "reader", Scope::Read, None),
            line("t2", "orders", Scope::Append, Some("orders-"))
        );
        let entries = parse_tokens_file(&text).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].principal.name, "reader");
        assert_eq!(entries[0].principal.scope, Scope::Read);
        assert_eq!(entries[0].hash, hash_token("t1"));
        assert_eq!(entries[1].principal.prefix.as_deref(), Some("orders-"));
        assert_eq!(
            entries[1].line(),
            line("t2", "orders", Scope::Append, Some("orders-"))
        );
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number() {
        let good = line("t", "a", Scope::Read, None);
        let text = format!(
            "{good}\nb write {}\nc read nothex\nd read\ne read: {}\n{good}\n",
            hex(&hash_token("x")),
            hex(&hash_token("y"))
        );
        let problems = parse_tokens_file(&text).unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems[0].starts_with("line 2: unknown scope \"write\""));
        assert!(problems[1].starts_with("line 3: the third field"));
        assert!(problems[2].starts_with("line 4: expected"));
        assert!(problems[3].starts_with("line 5: an empty prefix"));
        assert!(problems[4].starts_with("line 6: the same token hash"));
    }

    #[test]
    fn scopes_include_the_lesser_ones_and_prefixes_limit_streams() {
        let (_dir, auth) = authenticator_with(&format!(
            "{}\n{}\n{}\n",
            line("r", "r", Scope::Read, None),
            line("a", "a", Scope::Append, Some("orders-")),
            line("x", "x", Scope::Admin, Some("orders-")),
        ));
        let read = auth.authenticate(Some("r")).unwrap();
        assert!(read.check_read("anything").is_ok());
        assert_eq!(
            read.check_append("orders-1").unwrap_err().missing,
            Scope::Append
        );
        let append = auth.authenticate(Some("a")).unwrap();
        assert!(append.check_append("orders-1").is_ok());
        assert!(append.can_read("orders-1"));
        assert!(!append.can_read("payments-1"));
        assert!(!append.reads_everything());
        assert_eq!(
            append.check_admin_stream("orders-1").unwrap_err().missing,
            Scope::Admin
        );
        let admin = auth.authenticate(Some("x")).unwrap();
        assert!(admin.check_admin_stream("orders-1").is_ok());
        assert!(
            admin.check_admin().is_err(),
            "a prefix admin cannot scavenge the whole store"
        );
    }

    #[test]
    fn missing_and_unknown_tokens_are_unauthenticated_and_an_open_api_lets_everything_through() {
        let (_dir, auth) = authenticator_with(&line("r", "r", Scope::Read, None));
        assert_eq!(auth.authenticate(None), Err(Unauthenticated));
        assert_eq!(auth.authenticate(Some("nope")), Err(Unauthenticated));
        assert_eq!(
            auth.authenticate_header(Some("Basic cg==")),
            Err(Unauthenticated)
        );
        assert!(auth.authenticate_header(Some("bearer r")).is_ok());
        let open = Authenticator::open();
        assert_eq!(open.authenticate(None), Ok(Access::Open));
        assert!(Access::Open.check_admin().is_ok());
    }

    #[test]
    fn the_single_token_is_an_admin_of_every_stream() {
        let auth = Authenticator::new(Some(&Secret::new("s3cret")), None).unwrap();
        let access = auth.authenticate(Some("s3cret")).unwrap();
        assert!(access.check_admin().is_ok());
        assert_eq!(access.name(), Some(SINGLE_TOKEN_NAME));
    }

    #[test]
    fn a_reload_picks_up_new_lines_and_a_broken_file_keeps_the_old_tokens() {
        let (dir, auth) = authenticator_with(&line("old", "old", Scope::Read, None));
        let path = dir.path().join("tokens");
        std::fs::write(&path, line("new", "new", Scope::Read, None)).unwrap();
        assert_eq!(auth.reload(), Ok(1));
        assert!(auth.authenticate(Some("old")).is_err());
        assert!(auth.authenticate(Some("new")).is_ok());
        std::fs::write(&path, "garbage").unwrap();
        assert!(auth.reload().unwrap_err().contains("line 1"));
        assert!(auth.authenticate(Some("new")).is_ok());
    }

    #[test]
    fn a_remembered_token_stops_working_at_the_reload_that_removes_it_and_failures_are_not_kept() {
        let (dir, auth) = authenticator_with(&line("old", "old", Scope::Read, None));
        // Verified once by its digest, then from memory: the same answer both times.
        for _ in 0..2 {
            assert_eq!(auth.authenticate(Some("old")).unwrap().name(), Some("old"));
        }
        assert_eq!(auth.current().verified.read().unwrap().len(), 1);
        for n in 0..100 {
            assert!(auth.authenticate(Some(&format!("guess-{n}"))).is_err());
        }
        assert_eq!(
            auth.current().verified.read().unwrap().len(),
            1,
            "a wrong token is never remembered"
        );
        std::fs::write(
            dir.path().join("tokens"),
            line("new", "new", Scope::Read, None),
        )
        .unwrap();
        assert_eq!(auth.reload(), Ok(1));
        assert!(
            auth.authenticate(Some("old")).is_err(),
            "revoked by the reload"
        );
        assert!(auth.authenticate(Some("new")).is_ok());
    }

    #[test]
    fn a_denial_names_the_missing_scope_and_the_stream() {
        let denied = Denied {
            missing: Scope::Append,
            stream: Some("orders-1".into()),
        };
        let json = serde_json::to_value(denied.to_problem()).unwrap();
        assert_eq!(json["status"], 403);
        assert_eq!(json["type"], "/problems/forbidden");
        assert_eq!(json["missing_scope"], "append");
        assert_eq!(json["stream"], "orders-1");
    }

    #[test]
    fn new_tokens_are_long_random_and_url_safe() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }
}
