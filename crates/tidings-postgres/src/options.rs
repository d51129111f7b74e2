//! Opening options, read from a broker URL.

use std::path::PathBuf;
use std::time::Duration;

use tidings_core::{Durability, Error, Result};

/// The schema Tidings uses when the URL names none.
pub const DEFAULT_SCHEMA: &str = "tidings";

/// How to reach PostgreSQL and where to keep the queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// The connection URL handed to tokio-postgres (Tidings' own options removed).
    pub url: String,
    /// The schema holding Tidings' tables and functions.
    pub schema: String,
    /// Most connections open at once (blocked receives hold none).
    pub pool_size: usize,
    /// How long an operation keeps retrying while the server cannot be
    /// reached (a restart, a failover) before it fails as unavailable.
    pub retry_for: Duration,
    /// Create and upgrade the schema at open (otherwise an outdated schema
    /// is an error that asks for `tidings migrate`).
    pub migrate: bool,
    /// Durability of sends to queues that do not choose one.
    pub durability: Durability,
    /// Whether connections use TLS, and what of the server's certificate
    /// is checked (`sslmode`, as libpq reads it).
    pub tls: TlsMode,
    /// A PEM file of the certificate authorities a server's certificate
    /// must chain to (`sslrootcert`); without it, the Mozilla roots of
    /// `webpki-roots`.
    pub root_certificates: Option<PathBuf>,
}

/// `sslmode`: TLS to PostgreSQL, as libpq understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Never TLS.
    Disable,
    /// TLS if the server offers it, its certificate unchecked (libpq's
    /// default, and this one's).
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is checked against
    /// `sslrootcert` if one is given (as `VerifyCa`), else unchecked.
    Require,
    /// TLS, with a certificate that chains to a trusted authority.
    VerifyCa,
    /// TLS, with a certificate that chains to a trusted authority and
    /// names the host connected to.
    VerifyFull,
}

impl TlsMode {
    /// Whether the server's certificate must chain to a trusted authority.
    pub fn verifies(self, root_certificates_given: bool) -> bool {
        match self {
            Self::VerifyCa | Self::VerifyFull => true,
            Self::Require => root_certificates_given,
            Self::Disable | Self::Prefer => false,
        }
    }
}

impl PostgresOptions {
    /// Options for `url` with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: DEFAULT_SCHEMA.to_owned(),
            pool_size: 16,
            retry_for: Duration::from_secs(15),
            migrate: true,
            durability: Durability::Sync,
            tls: TlsMode::default(),
            root_certificates: None,
        }
    }

    /// Parses `postgres://user@host:5432/db?schema=tidings&pool_size=16`.
    /// Besides `schema`, Tidings reads `pool_size`, `retry_for` (a duration
    /// like `15s`), `migrate` (`true` or `false`), `durability` (`sync`
    /// or `buffered`), `sslmode` (see [`TlsMode`]) and `sslrootcert` (a
    /// PEM file); other options are left for the driver
    /// (`connect_timeout`, `application_name`, ...).
    ///
    /// ```
    /// use tidings_postgres::PostgresOptions;
    /// let o = PostgresOptions::from_url("postgres://postgres@127.0.0.1/app?schema=queues&pool_size=4")?;
    /// assert_eq!(o.url, "postgres://postgres@127.0.0.1/app");
    /// assert_eq!((o.schema.as_str(), o.pool_size), ("queues", 4));
    /// # Ok::<_, tidings_core::Error>(())
    /// ```
    pub fn from_url(url: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: redact(url),
            reason,
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(invalid(
                "a PostgreSQL URL starts with postgres:// or postgresql://".into(),
            ));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut options = Self::new(base);
        let mut passed = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "schema" => {
                    check_schema(value).map_err(invalid)?;
                    options.schema = value.to_owned();
                }
                "pool_size" => {
                    options.pool_size = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| {
                            invalid(format!(
                                "pool_size={value:?} is not a number from 1 to 1000"
                            ))
                        })?;
                }
                "retry_for" => {
                    options.retry_for = parse_duration(value).ok_or_else(|| {
                        invalid(format!(
                            "retry_for={value:?} is not a duration like 15s or 500ms"
                        ))
                    })?;
                }
                "migrate" => {
                    options.migrate = match value {
                        "true" | "1" | "yes" => true,
                        "false" | "0" | "no" => false,
                        _ => {
                            return Err(invalid(format!("migrate={value:?} is not true or false")));
                        }
                    };
                }
                "durability" => {
                    options.durability = match value {
                        "sync" => Durability::Sync,
                        "buffered" => Durability::Buffered,
                        _ => {
                            return Err(invalid(format!(
                                "durability={value:?} is not sync or buffered"
                            )));
                        }
                    };
                }
                "sslmode" => {
                    options.tls = match value {
                        "disable" => TlsMode::Disable,
                        "prefer" => TlsMode::Prefer,
                        "require" => TlsMode::Require,
                        "verify-ca" => TlsMode::VerifyCa,
                        "verify-full" => TlsMode::VerifyFull,
                        _ => {
                            return Err(invalid(format!(
                                "sslmode={value:?} is not disable, prefer, require, verify-ca or verify-full"
                            )));
                        }
                    };
                }
                "sslrootcert" => {
                    if value.is_empty() {
                        return Err(invalid("sslrootcert= names no file".into()));
                    }
                    options.root_certificates = Some(PathBuf::from(value));
                }
                _ => passed.push(pair),
            }
        }
        if !passed.is_empty() {
            options.url = format!("{base}?{}", passed.join("&"));
        }
        options
            .url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(options)
    }

    /// The driver's configuration.
    pub(crate) fn config(&self) -> Result<tokio_postgres::Config> {
        let mut config =
            self.url
                .parse::<tokio_postgres::Config>()
                .map_err(|e| Error::InvalidUrl {
                    url: redact(&self.url),
                    reason: e.to_string(),
                })?;
        config.ssl_mode(match self.tls {
            TlsMode::Disable => tokio_postgres::config::SslMode::Disable,
            TlsMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        Ok(config)
    }

    /// The schema as a quoted SQL identifier.
    pub(crate) fn schema_ident(&self) -> String {
        format!("\"{}\"", self.schema)
    }
}

/// A schema name: letters, digits and `_`, not starting with a digit, at
/// most 48 bytes (so that the names derived from it fit PostgreSQL's 63).
fn check_schema(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "schema={name:?} must be 1 to 48 letters, digits or _, not starting with a digit"
        ))
    }
}

/// The URL without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}/{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

fn parse_duration(text: &str) -> Option<Duration> {
    humantime::parse_duration(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidings_options_are_taken_out_and_the_rest_passed_on() {
        let o = PostgresOptions::from_url(
            "postgres://u:secret@db:5433/app?schema=t_1&connect_timeout=3&retry_for=2s&migrate=false",
        )
        .ok();
        let o = o.as_ref();
        assert_eq!(
            o.map(|o| o.url.as_str()),
            Some("postgres://u:secret@db:5433/app?connect_timeout=3")
        );
        assert_eq!(o.map(|o| o.schema.as_str()), Some("t_1"));
        assert_eq!(o.map(|o| o.retry_for), Some(Duration::from_secs(2)));
        assert_eq!(o.map(|o| o.migrate), Some(false));
    }

    #[test]
    fn sslmode_and_sslrootcert_are_read_as_libpq_reads_them() {
        let read = |url: &str| {
            PostgresOptions::from_url(url)
                .ok()
                .map(|o| (o.tls, o.root_certificates, o.url))
        };
        assert_eq!(
            read("postgres://h/db"),
            Some((TlsMode::Prefer, None, "postgres://h/db".to_owned()))
        );
        assert_eq!(
            read("postgres://h/db?sslmode=verify-full&sslrootcert=/etc/ca.pem"),
            Some((
                TlsMode::VerifyFull,
                Some(PathBuf::from("/etc/ca.pem")),
                "postgres://h/db".to_owned()
            ))
        );
        assert!(TlsMode::Require.verifies(true) && !TlsMode::Require.verifies(false));
        assert!(TlsMode::VerifyCa.verifies(false) && !TlsMode::Prefer.verifies(true));
    }

    #[test]
    fn bad_options_say_why_without_the_password() {
        for (url, why) in [
            ("postgres://h/db?schema=a-b", "schema"),
            ("postgres://h/db?schema=1a", "schema"),
            ("postgres://h/db?pool_size=0", "pool_size"),
            ("postgres://h/db?retry_for=soon", "retry_for"),
            ("postgres://h/db?sslmode=allow", "sslmode"),
            ("mysql://h/db", "postgres://"),
        ] {
            let err = PostgresOptions::from_url(url).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains(why)),
                "{url}: {err:?}"
            );
        }
        let err = PostgresOptions::from_url("postgres://u:hunter2@h/db?schema=")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
