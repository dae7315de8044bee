//! `coapgate reset-password`: sets a user's password from the command line, for a forgotten
//! admin password or a leaked one. `COAPGATE_ADMIN_PASSWORD` only sets the first password; this
//! is the explicit way to change it later, so a stale environment variable never changes a
//! password behind the administrator's back.
//!
//! The new password is read from standard input (`--password-stdin`, never from the command line,
//! where other local users can read it in the process list) or generated and printed once. It
//! must meet the password policy. Every token issued under the old password stops working at once,
//! even in a server that is running (tokens carry the password's credentials version), and a
//! lockout of the user ends with it. For an invited user who never activated, this sets the
//! first password and the activation link stops working; a disabled user stays disabled.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, bail};
use coapgate_storage::{PgStore, SqliteStore, Store};

use crate::config::{Config, Database};

#[derive(clap::Args)]
pub struct ResetPasswordArgs {
    /// The user's e-mail (any user: a tenant administrator or a customer user); default:
    /// COAPGATE_ADMIN_USERNAME.
    #[arg(long, alias = "email")]
    username: Option<String>,
    /// Read the new password from the first line of standard input instead of generating one.
    #[arg(long)]
    password_stdin: bool,
    /// TOML configuration file, as for `serve`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory; overrides COAPGATE_DATA_DIR.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

pub fn run(args: ResetPasswordArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref(), args.data_dir.as_deref())?;
    let username = args.username.unwrap_or_else(|| config.admin_username.clone());
    let store: Box<dyn Store> = match &config.database {
        // PostgreSQL is shared: a running server need not be stopped, and its next token check
        // sees the new credentials version.
        Database::Postgres { config: pg, setting } => Box::new(PgStore::open((**pg).clone()).map_err(|e| {
            anyhow::anyhow!("{setting}: cannot open the database at {}: {e}", config.database.describe())
        })?),
        Database::Sqlite(_) => {
            if !config.database_path.exists() {
                bail!("no database at {} (COAPGATE_DATA_DIR / DATABASE_URL)", config.database_path.display());
            }
            crate::private_files::tighten(&config);
            // A running server holds its data files exclusively (storage's unix-excl VFS): say so
            // rather than leave "database is locked" to be deciphered.
            Box::new(SqliteStore::open(&config.database_path).map_err(|e| {
                let hint = if e.to_string().contains("database is locked") {
                    " (a running coapgate server holds it: stop the server first, then run reset-password)"
                } else {
                    ""
                };
                anyhow::anyhow!("cannot open SQLite database {}: {e}{hint}", config.database_path.display())
            })?)
        }
    };
    let user = store.user_by_email(&username)?.with_context(|| format!("no user {username:?}"))?;
    let (password, generated) = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("reading the new password from standard input")?;
        (line.trim_end_matches(['\r', '\n']).to_string(), false)
    } else {
        (crate::api::generate_password(), true)
    };
    crate::api::check_password_policy(&password).map_err(|e| anyhow::anyhow!("new password: {e}"))?;
    let hash = bcrypt::hash(&password, crate::api::PASSWORD_HASH_COST)?;
    store.set_user_password_hash(user.id, &hash)?;
    if generated {
        println!("new password for {username}: {password}   (shown only this once)");
    } else {
        println!("password for {username} changed");
    }
    println!("tokens issued under the old password no longer work");
    Ok(())
}
