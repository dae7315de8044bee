//! Where the PostgreSQL database is: a `postgres://` URL, or ThingsBoard's settings
//! (`SPRING_DATASOURCE_URL` as `jdbc:postgresql://host:port/db`, with the user name and password
//! given separately in `SPRING_DATASOURCE_USERNAME` / `SPRING_DATASOURCE_PASSWORD`).

use std::time::Duration;

use crate::{Result, StorageError};

/// A connection configuration. TLS is not supported yet: `sslmode=require` is refused here, by
/// name, rather than failing at the first connection.
#[derive(Clone)]
pub struct PgConfig {
    pub(crate) config: postgres::Config,
}

impl std::fmt::Debug for PgConfig {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("hosts", &self.config.get_hosts())
            .field("ports", &self.config.get_ports())
            .field("dbname", &self.config.get_dbname())
            .field("user", &self.config.get_user())
            .finish()
    }
}

fn invalid(url: &str, what: impl std::fmt::Display) -> StorageError {
    StorageError::Other(format!("invalid PostgreSQL URL {:?}: {what}", redact(url)))
}

/// The URL with any password replaced, for error messages. The last `@` ends the user part,
/// so a password containing a raw `@` is hidden whole.
pub fn redact(url: &str) -> String {
    let mut out = url.to_string();
    // postgres://user:secret@host → postgres://user:***@host
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        if let Some(at) = rest.rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            out.replace_range(scheme_end + 3 + colon + 1..scheme_end + 3 + at, "***");
        }
    }
    // ?password=secret&… → ?password=***&…
    if let Some(start) = out.find("password=") {
        let value = start + "password=".len();
        let end = out[value..].find('&').map_or(out.len(), |e| value + e);
        out.replace_range(value..end, "***");
    }
    out
}

impl PgConfig {
    /// Parses `postgres://user:pass@host:port/db` (or `postgresql://`, or libpq's
    /// `host=… dbname=…` form), or a `jdbc:postgresql://` URL whose user and password are in its
    /// query string, if anywhere.
    pub fn from_url(url: &str) -> Result<PgConfig> {
        if url.starts_with("jdbc:") {
            return PgConfig::from_jdbc(url, None, None);
        }
        let config: postgres::Config = url.parse().map_err(|e| invalid(url, error_text(&e)))?;
        PgConfig::checked(url, config)
    }

    /// ThingsBoard's form: `jdbc:postgresql://host[:port][,host2[:port2]]/db[?property=value&…]`,
    /// with the user name and password given separately (they win over `user=` / `password=`
    /// properties of the URL). Properties the JDBC driver uses for tuning (`stringtype`,
    /// `prepareThreshold`, …) are ignored; `sslmode`, `ApplicationName`, `connectTimeout` and
    /// `currentSchema` are honoured.
    pub fn from_jdbc(url: &str, user: Option<&str>, password: Option<&str>) -> Result<PgConfig> {
        let rest = url
            .strip_prefix("jdbc:postgresql://")
            .ok_or_else(|| invalid(url, "a JDBC URL must start with jdbc:postgresql://"))?;
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (hosts, dbname) = location.split_once('/').unwrap_or((location, ""));
        let mut config = postgres::Config::new();
        if hosts.is_empty() {
            config.host("localhost");
        }
        for host in hosts.split(',').filter(|h| !h.is_empty()) {
            // [::1]:5432, host:5432, host
            let (name, port) = if let Some(v6) = host.strip_prefix('[') {
                let (addr, after) =
                    v6.split_once(']').ok_or_else(|| invalid(url, format!("unclosed '[' in host {host:?}")))?;
                (addr, after.strip_prefix(':'))
            } else {
                match host.rsplit_once(':') {
                    Some((name, port)) => (name, Some(port)),
                    None => (host, None),
                }
            };
            let port = match port {
                Some(p) => p.parse::<u16>().map_err(|_| invalid(url, format!("port {p:?} is not a number from 1 to 65535")))?,
                None => 5432,
            };
            config.host(name).port(port);
        }
        let dbname = percent_decode(dbname).map_err(|e| invalid(url, e))?;
        if dbname.is_empty() {
            return Err(invalid(url, "no database name (expected jdbc:postgresql://host:port/database)"));
        }
        config.dbname(&dbname);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value).map_err(|e| invalid(url, e))?;
            match name {
                "user" => {
                    config.user(&value);
                }
                "password" => {
                    config.password(value);
                }
                "sslmode" => {
                    config.ssl_mode(ssl_mode(url, &value)?);
                }
                "ApplicationName" => {
                    config.application_name(&value);
                }
                "connectTimeout" => {
                    let seconds = value
                        .parse::<u64>()
                        .map_err(|_| invalid(url, format!("connectTimeout {value:?} is not a number of seconds")))?;
                    if seconds > 0 {
                        config.connect_timeout(Duration::from_secs(seconds));
                    }
                }
                "currentSchema" => {
                    config.options(&format!("-c search_path={value}"));
                }
                _ => {}
            }
        }
        if let Some(user) = user.filter(|u| !u.is_empty()) {
            config.user(user);
        }
        if let Some(password) = password {
            config.password(password);
        }
        PgConfig::checked(url, config)
    }

    fn checked(url: &str, mut config: postgres::Config) -> Result<PgConfig> {
        if config.get_hosts().is_empty() {
            return Err(invalid(url, "no host"));
        }
        if config.get_user().is_none() {
            return Err(invalid(url, "no user name (give it in the URL or as SPRING_DATASOURCE_USERNAME)"));
        }
        if config.get_dbname().is_none() {
            return Err(invalid(url, "no database name"));
        }
        if config.get_ssl_mode() == postgres::config::SslMode::Require {
            return Err(invalid(url, "sslmode=require: TLS connections to PostgreSQL are not supported yet"));
        }
        // TLS is not negotiated at all (no connector), so `prefer` means plain.
        config.ssl_mode(postgres::config::SslMode::Disable);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("coapgate");
        }
        Ok(PgConfig { config })
    }

    /// The database name, for messages.
    pub fn dbname(&self) -> &str {
        self.config.get_dbname().unwrap_or("")
    }

    /// Where the server is, for messages: `host:port` of the first host.
    pub fn address(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => String::new(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}")
    }
}

fn ssl_mode(url: &str, value: &str) -> Result<postgres::config::SslMode> {
    use postgres::config::SslMode;
    match value {
        "disable" | "allow" => Ok(SslMode::Disable),
        "prefer" => Ok(SslMode::Prefer),
        "require" | "verify-ca" | "verify-full" => Ok(SslMode::Require),
        other => Err(invalid(url, format!("unknown sslmode {other:?}"))),
    }
}

fn percent_decode(text: &str) -> std::result::Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or_else(|| format!("bad percent escape in {text:?}"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad percent escape in {text:?}"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8 once decoded"))
}

/// A PostgreSQL error with its causes: the client's own text is only "db error" or
/// "error connecting to server", the reason is in the source chain.
pub(crate) fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jdbc_urls_take_user_and_password_separately() {
        let c = PgConfig::from_jdbc("jdbc:postgresql://db.local:6543/thingsboard", Some("tb"), Some("secret")).unwrap();
        assert_eq!(c.address(), "db.local:6543");
        assert_eq!(c.dbname(), "thingsboard");
        assert_eq!(c.config.get_user(), Some("tb"));
        assert_eq!(c.config.get_password(), Some(&b"secret"[..]));
        let c = PgConfig::from_url("jdbc:postgresql://localhost/tb?user=u&password=p%40ss&stringtype=unspecified").unwrap();
        assert_eq!((c.address().as_str(), c.config.get_user()), ("localhost:5432", Some("u")));
        assert_eq!(c.config.get_password(), Some(&b"p@ss"[..]));
    }

    #[test]
    fn postgres_urls_parse() {
        let c = PgConfig::from_url("postgres://me:pw@127.0.0.1:5433/test").unwrap();
        assert_eq!((c.address().as_str(), c.dbname()), ("127.0.0.1:5433", "test"));
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let err = |r: Result<PgConfig>| r.unwrap_err().to_string();
        assert!(err(PgConfig::from_jdbc("jdbc:mysql://h/db", Some("u"), None)).contains("jdbc:postgresql://"));
        assert!(err(PgConfig::from_jdbc("jdbc:postgresql://h:99999/db", Some("u"), None)).contains("port \"99999\""));
        assert!(err(PgConfig::from_jdbc("jdbc:postgresql://h:5432/", Some("u"), None)).contains("no database name"));
        assert!(err(PgConfig::from_jdbc("jdbc:postgresql://h/db", None, None)).contains("no user name"));
        let text = err(PgConfig::from_url("postgres://me:hunter2@h/db?sslmode=require"));
        assert!(text.contains("sslmode=require") && !text.contains("hunter2"), "{text}");
        assert!(err(PgConfig::from_url("postgres://me@h/db?bogus=1")).contains("invalid PostgreSQL URL"));
    }
}
