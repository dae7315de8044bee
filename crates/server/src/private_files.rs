//! Files only the server's user may read: the databases hold the JWT signing secret, DTLS PSK
//! keys, integration secrets and password hashes.
//!
//! The process runs with umask 077, so everything it creates (the SQLite databases with their
//! `-wal` and `-shm` files, whatever storage adds later) is born 0600 and directories 0700,
//! whatever creates it. Files an older version created 0644 are tightened at start.

use std::os::unix::fs::PermissionsExt;

use crate::config::Config;

/// Makes every file the process creates from now on private to its user.
pub fn restrict_new_files() {
    // SAFETY: umask only sets the process's file mode creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Removes group and other permissions from the data directory and the files directly in it,
/// and from the SQLite database's own files (main, history, events and their logs) when the
/// database lives elsewhere. The directory such a database lives in is not ours: it may be a
/// shared one (`/tmp`, `/var/lib`), whose mode and other files are left alone. Failures are
/// logged, not fatal: a read-only mount still starts.
pub fn tighten(config: &Config) {
    if let Ok(entries) = std::fs::read_dir(&config.data_dir) {
        restrict(&config.data_dir, 0o700);
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                restrict(&entry.path(), 0o600);
            }
        }
    }
    if config.database_path.parent().is_some_and(|dir| dir != config.data_dir.as_path()) {
        for file in coapgate_storage::sqlite::data_files(&config.database_path) {
            for file in [coapgate_storage::sqlite::wal_path(&file), file] {
                if std::fs::symlink_metadata(&file).is_ok_and(|m| m.is_file()) {
                    restrict(&file, 0o600);
                }
            }
        }
    }
}

fn restrict(path: &std::path::Path, mode: u32) {
    let Ok(meta) = std::fs::metadata(path) else { return };
    let current = meta.permissions().mode() & 0o777;
    if current & 0o077 != 0 {
        let tightened = current & mode;
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(tightened)) {
            tracing::warn!("cannot make {} private (mode {current:o}): {e}", path.display());
        }
    }
}
