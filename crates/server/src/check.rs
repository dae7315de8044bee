//! `coapgate check`: verifies a data directory without changing it, and prints one line per file.

use anyhow::bail;

use crate::config::Config;

pub fn run(config: &Config) -> anyhow::Result<()> {
    if config.database.is_postgres() {
        bail!(
            "coapgate check verifies SQLite data files; it is not available for PostgreSQL yet ({} is checked by PostgreSQL itself: amcheck, pg_checksums)",
            config.database.describe()
        );
    }
    let checks = coapgate_storage::sqlite::check_files(&config.database_path);
    let mut bad = 0;
    for check in &checks {
        if check.problems.is_empty() {
            println!("ok       {}", check.file.display());
        } else {
            bad += 1;
            for problem in &check.problems {
                println!("DAMAGED  {}: {problem}", check.file.display());
            }
        }
    }
    if bad > 0 {
        bail!("{bad} of {} database files in {} need attention (see above)", checks.len(), config.data_dir.display());
    }
    Ok(())
}
