//! Bearer tokens with roles, for the HTTP API and the gRPC services. Off unless
//! `--auth-file` names a TOML file of tokens:
//!
//! ```toml
//! [[token]]
//! name = "dashboards"        # shown in logs and errors instead of the secret
//! role = "read"              # read | write | admin
//! secret = "at least 16 characters"
//! ```
//!
//! `read` may query (graph, tags, live queries, streams, /metrics); `write` may send data
//! (publish, remote write, events, the agent protocol, OTLP); `admin` may do both and see
//! operator views (cardinality, storage). `/healthz` stays open. A missing or unknown token
//! gets 401 (`UNAUTHENTICATED`), a known one without the role 403 (`PERMISSION_DENIED`).
//! Secrets are compared in constant time and never logged.

use std::path::Path;

use anyhow::{Context, bail};
use axum::http::Method;
use serde::Deserialize;

/// Shortest secret accepted: a token is only as good as its entropy.
const MIN_SECRET_LEN: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Write,
    Admin,
}

impl Role {
    /// Whether a token with this role may do what needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self == Role::Admin || self == needed
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    role: Role,
    secret: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    token: Vec<TokenEntry>,
}

/// The configured tokens.
pub struct Tokens {
    entries: Vec<TokenEntry>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names and roles only: secrets never reach a log.
        f.debug_list()
            .entries(self.entries.iter().map(|e| (&e.name, e.role.name())))
            .finish()
    }
}

/// Why a request was not let through.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// No token, or one that matches no entry.
    Unauthenticated(&'static str),
    /// A known token without the role the request needs.
    Forbidden {
        name: String,
        has: Role,
        needs: Role,
    },
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denied::Unauthenticated(why) => write!(f, "unauthenticated: {why}"),
            Denied::Forbidden { name, has, needs } => write!(
                f,
                "forbidden: token {name:?} has role {}, this needs {}",
                has.name(),
                needs.name()
            ),
        }
    }
}

/// Equal in constant time for equal lengths (the length of a secret is not the secret).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

impl Tokens {
    pub fn from_file(path: &Path) -> anyhow::Result<Tokens> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the auth file {}", path.display()))?;
        Tokens::parse(&text).with_context(|| format!("in the auth file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Tokens> {
        let file: TokenFile =
            toml::from_str(text).context("expected [[token]] tables with name, role and secret")?;
        if file.token.is_empty() {
            bail!("no [[token]] entries");
        }
        for (i, t) in file.token.iter().enumerate() {
            if t.secret.len() < MIN_SECRET_LEN {
                bail!(
                    "token {} ({:?}): the secret is shorter than {MIN_SECRET_LEN} characters",
                    i + 1,
                    t.name
                );
            }
        }
        Ok(Tokens {
            entries: file.token,
        })
    }

    /// An `Authorization` value a node presents for a request of its own to the other
    /// nodes (they read the same tokens): the first token allowed to read.
    pub fn own_bearer(&self) -> Option<String> {
        self.entries
            .iter()
            .find(|e| e.role.allows(Role::Read))
            .map(|e| format!("Bearer {}", e.secret))
    }

    /// Checks an `Authorization` header value against what `needed` requires.
    pub fn check(&self, authorization: Option<&str>, needed: Role) -> Result<(), Denied> {
        let presented = authorization.ok_or(Denied::Unauthenticated(
            "no bearer token (Authorization: Bearer …)",
        ))?;
        // The scheme is case-insensitive (RFC 9110 section 11.1): `Bearer`, `bearer`, `BEARER`.
        let secret = presented
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, secret)| secret)
            .ok_or(Denied::Unauthenticated(
                "the Authorization header is not a bearer token",
            ))?
            .trim();
        // Every entry is compared, so the time taken does not say which one matched.
        let mut found = None;
        for e in &self.entries {
            if same_secret(e.secret.as_bytes(), secret.as_bytes()) {
                found = Some(e);
            }
        }
        let entry = found.ok_or(Denied::Unauthenticated("unknown token"))?;
        if entry.role.allows(needed) {
            Ok(())
        } else {
            Err(Denied::Forbidden {
                name: entry.name.clone(),
                has: entry.role,
                needs: needed,
            })
        }
    }
}

/// The Prometheus query API's routes that Grafana's data source calls with POST (a form
/// body): they read, so a read token is enough.
const READ_BY_POST: [&str; 7] = [
    "/api/v1/query",
    "/api/v1/query_range",
    "/api/v1/labels",
    "/api/v1/series",
    "/api/v1/query_exemplars",
    "/api/v1/format_query",
    "/api/v1/parse_query",
];

/// The role an HTTP route needs; `None` for open routes.
pub fn role_for_route(method: &Method, route: &str) -> Option<Role> {
    match route {
        // The UI's static files hold no data; what they ask of the API needs its token.
        "/healthz" | "/" | "/ui/{file}" => None,
        "/api/v1/cardinality" | "/api/v1/debug/storage" => Some(Role::Admin),
        "/api/v1/publish"
        | "/api/v1/publish-fast"
        | "/api/v4/update"
        | "/api/v1/backfill"
        | "/api/v1/write"
        | "/api/v1/events/{stream}" => Some(Role::Write),
        r if READ_BY_POST.contains(&r) => Some(Role::Read),
        _ if method == Method::POST => Some(Role::Write),
        _ => Some(Role::Read),
    }
}

/// The tokens in force: loaded from `--auth-file` at start, and again on `SIGHUP`, so
/// tokens rotate without a restart. A file that does not load keeps the tokens before it.
#[derive(Debug, Default)]
pub struct TokenStore {
    path: Option<std::path::PathBuf>,
    current: parking_lot::RwLock<Option<std::sync::Arc<Tokens>>>,
    /// Reloads that took the file, and that failed (the tokens before them stayed).
    reloads: [std::sync::atomic::AtomicU64; 2],
}

impl TokenStore {
    /// Loads `path` (`None`: no authentication).
    pub fn open(path: Option<&Path>) -> anyhow::Result<TokenStore> {
        let current = match path {
            Some(p) => Some(std::sync::Arc::new(Tokens::from_file(p)?)),
            None => None,
        };
        Ok(TokenStore {
            path: path.map(Path::to_path_buf),
            current: parking_lot::RwLock::new(current),
            reloads: Default::default(),
        })
    }

    pub fn get(&self) -> Option<std::sync::Arc<Tokens>> {
        self.current.read().clone()
    }

    /// Reads the file again; the number of tokens now in force. Without `--auth-file`
    /// there is nothing to reload.
    pub fn reload(&self) -> anyhow::Result<usize> {
        let Some(path) = &self.path else {
            bail!("no --auth-file to reload");
        };
        let loaded = Tokens::from_file(path);
        let outcome = usize::from(loaded.is_err());
        self.reloads[outcome].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tokens = loaded?;
        let n = tokens.entries.len();
        *self.current.write() = Some(std::sync::Arc::new(tokens));
        Ok(n)
    }

    /// `argus_auth_reloads_total{outcome}` in Prometheus's text format.
    pub fn render_metrics(&self) -> String {
        let [loaded, failed] = &self.reloads;
        format!(
            "# HELP argus_auth_reloads_total Reloads of --auth-file on SIGHUP, by outcome (a failed one keeps the tokens before it).\n\
             # TYPE argus_auth_reloads_total counter\n\
             argus_auth_reloads_total{{outcome=\"loaded\"}} {}\n\
             argus_auth_reloads_total{{outcome=\"failed\"}} {}\n",
            loaded.load(std::sync::atomic::Ordering::Relaxed),
            failed.load(std::sync::atomic::Ordering::Relaxed)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_queries_by_post_need_only_a_read_token() {
        assert_eq!(
            role_for_route(&Method::POST, "/api/v1/query"),
            Some(Role::Read)
        );
        assert_eq!(
            role_for_route(&Method::POST, "/api/v1/query_range"),
            Some(Role::Read)
        );
        assert_eq!(
            role_for_route(&Method::POST, "/api/v1/series"),
            Some(Role::Read)
        );
        assert_eq!(
            role_for_route(&Method::GET, "/api/v1/labels"),
            Some(Role::Read)
        );
        assert_eq!(
            role_for_route(&Method::POST, "/api/v1/write"),
            Some(Role::Write)
        );
        assert_eq!(
            role_for_route(&Method::POST, "/api/v1/graph"),
            Some(Role::Write)
        );
    }

    const FILE: &str = r#"
[[token]]
name = "dash"
role = "read"
secret = "read-secret-0123456789"

[[token]]
name = "agents"
role = "write"
secret = "write-secret-0123456789"

[[token]]
name = "ops"
role = "admin"
secret = "admin-secret-0123456789"
"#;

    #[test]
    fn roles_and_refusals() {
        let t = Tokens::parse(FILE).unwrap();
        let bearer = |s: &str| format!("Bearer {s}");
        for scheme in ["bearer", "BEARER", "BeArEr"] {
            assert_eq!(
                t.check(
                    Some(&format!("{scheme} read-secret-0123456789")),
                    Role::Read
                ),
                Ok(()),
                "{scheme}"
            );
        }
        assert!(
            t.check(Some("Basic read-secret-0123456789"), Role::Read)
                .is_err()
        );
        assert!(
            t.check(Some("Bearerread-secret-0123456789"), Role::Read)
                .is_err()
        );
        assert_eq!(
            t.check(Some(&bearer("read-secret-0123456789")), Role::Read),
            Ok(())
        );
        assert!(matches!(
            t.check(Some(&bearer("read-secret-0123456789")), Role::Write),
            Err(Denied::Forbidden { .. })
        ));
        assert_eq!(
            t.check(Some(&bearer("admin-secret-0123456789")), Role::Write),
            Ok(())
        );
        assert!(matches!(
            t.check(Some(&bearer("read-secret-012345678")), Role::Read),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            t.check(None, Role::Read),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            t.check(Some("Basic eDp5"), Role::Read),
            Err(Denied::Unauthenticated(_))
        ));
        let shown = format!("{t:?}");
        assert!(!shown.contains("secret-"), "{shown}");
    }

    #[test]
    fn weak_or_malformed_files_are_refused_with_reasons() {
        let err = Tokens::parse("[[token]]\nname = \"x\"\nrole = \"read\"\nsecret = \"short\"")
            .unwrap_err();
        assert!(format!("{err:#}").contains("shorter than 16"), "{err:#}");
        let err =
            Tokens::parse("[[token]]\nname = \"x\"\nrole = \"god\"\nsecret = \"0123456789abcdef\"")
                .unwrap_err();
        assert!(format!("{err:#}").contains("god"), "{err:#}");
    }
}
