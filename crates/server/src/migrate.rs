//! `coapgate migrate`: moves a stopped server's SQLite data directory into PostgreSQL (the
//! storage crate's `migrate`), printing progress while it runs and both sides' counts at the
//! end; exits non-zero when a count differs. Run again after an interruption, it continues.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use coapgate_storage::PgConfig;
use coapgate_storage::migrate::{MigrateOptions, Progress};

use crate::config::{Config, Database};

#[derive(clap::Args)]
pub struct MigrateArgs {
    /// TOML configuration file, as for `serve`.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// The data directory to copy (stop its server first); overrides COAPGATE_DATA_DIR.
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// The PostgreSQL database to fill: postgres://USER:PASSWORD@HOST:PORT/DB. Default: the
    /// database `serve` would use (DATABASE_URL or SPRING_DATASOURCE_*).
    #[arg(long)]
    to: Option<String>,
    /// Rows per committed chunk (a resumed run continues after the last committed one).
    #[arg(long, default_value_t = coapgate_storage::migrate::DEFAULT_CHUNK_ROWS)]
    chunk_rows: usize,
}

pub fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref(), args.data_dir.as_deref())?;
    let target = target(&config, args.to.as_deref())?;
    let source = &config.database_path;
    println!("migrating {} into postgres://{}/{}", source.display(), target.address(), target.dbname());
    let started = Instant::now();
    let mut lines = ProgressLines::new(started);
    let options = MigrateOptions { chunk_rows: args.chunk_rows, ..MigrateOptions::default() };
    let report = coapgate_storage::migrate::migrate(source, &target, &options, &mut |p| lines.show(p))?;
    let elapsed = started.elapsed();
    if report.moved_recent_points > 0 {
        println!("moved {} recent points into the history file first", report.moved_recent_points);
    }
    println!("{:<22} {:>14} {:>14}", "table", "SQLite", "PostgreSQL");
    for c in &report.counts {
        let verdict = if c.source == c.target { "" } else { "  MISMATCH" };
        println!("{:<22} {:>14} {:>14}{verdict}", c.table, c.source, c.target);
    }
    println!(
        "{} {} rows in {:.1} s ({:.0} rows/s)",
        if report.resumed { "resumed: copied" } else { "copied" },
        report.copied_rows,
        elapsed.as_secs_f64(),
        report.copied_rows as f64 / elapsed.as_secs_f64().max(1e-3)
    );
    let mismatches = report.mismatches();
    if !mismatches.is_empty() {
        let names: Vec<&str> = mismatches.iter().map(|c| c.table).collect();
        bail!("counts differ for {} (see above): the target is not a copy of the source", names.join(", "));
    }
    println!("counts match; start `coapgate serve` with DATABASE_URL pointing at the new database");
    Ok(())
}

/// `--to`, else the database `serve` is configured for, which must be PostgreSQL.
fn target(config: &Config, to: Option<&str>) -> anyhow::Result<PgConfig> {
    if let Some(url) = to {
        return PgConfig::from_url(url).context("--to");
    }
    match &config.database {
        Database::Postgres { config, .. } => Ok((**config).clone()),
        Database::Sqlite(_) => bail!(
            "no PostgreSQL database to migrate into: pass --to postgres://USER:PASSWORD@HOST:PORT/DB, or set DATABASE_URL (or SPRING_DATASOURCE_URL)"
        ),
    }
}

/// One line per table at most every two seconds, and one when it is complete.
struct ProgressLines {
    started: Instant,
    last_line: Instant,
    table_started: Instant,
    /// When the previous chunk was committed: the start of the next table's first chunk.
    last_event: Instant,
    table: &'static str,
    first_copied: u64,
}

impl ProgressLines {
    fn new(started: Instant) -> ProgressLines {
        ProgressLines { started, last_line: started, table_started: started, last_event: started, table: "", first_copied: 0 }
    }

    fn show(&mut self, p: &Progress) {
        let now = Instant::now();
        if p.table != self.table {
            (self.table, self.table_started, self.first_copied) = (p.table, self.last_event, p.copied - p.rows);
        }
        self.last_event = now;
        if !p.done && now.duration_since(self.last_line) < Duration::from_secs(2) {
            return;
        }
        self.last_line = now;
        let elapsed = now.duration_since(self.table_started).as_secs_f64();
        // A few rows have no meaningful rate (the first table's time includes opening both sides).
        let rows = p.copied - self.first_copied;
        let rate = if rows >= 1000 && elapsed > 0.0 { format!("{:.0} rows/s", rows as f64 / elapsed) } else { String::new() };
        println!(
            "  {:<20} {:>12} / {:<12} {rate:>16}  [{:.0} s]{}",
            p.table,
            p.copied,
            p.total,
            now.duration_since(self.started).as_secs_f64(),
            if p.done { "  done" } else { "" }
        );
    }
}
