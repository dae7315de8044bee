//! A private PostgreSQL cluster for tests: `initdb` into a temporary directory, `pg_ctl start`
//! on a free loopback port, one database per test, `pg_ctl stop -m immediate` and the directory
//! removed when the last user lets go. Debian's binaries (`/usr/lib/postgresql/<version>/bin`,
//! or `PG_BIN`) refuse to run as root, so as root they run as the `postgres` user.
//!
//! Without the binaries the tests fail, saying so: a PostgreSQL test that passes without
//! PostgreSQL would prove nothing.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, Weak};

pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

/// One database of a running cluster; holds the cluster up while it lives.
pub struct PgDatabase {
    pub cluster: Arc<PgCluster>,
    pub name: String,
}

impl PgDatabase {
    /// `postgres://postgres@127.0.0.1:PORT/NAME` (trust authentication).
    pub fn url(&self) -> String {
        self.cluster.url(&self.name)
    }
}

static SHARED: Mutex<Weak<PgCluster>> = Mutex::new(Weak::new());

/// The binaries: `PG_BIN`, else the newest `/usr/lib/postgresql/<version>/bin` with `initdb`.
fn find_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL tests need a PostgreSQL server's binaries (initdb, pg_ctl): none found in \
             /usr/lib/postgresql/<version>/bin. Install Debian's `postgresql` package \
             (apt-get install postgresql) or set PG_BIN to the directory holding initdb."
        ),
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// Where clusters go: `PG_TEST_DIR`, else the first of the temporary directory, `/dev/shm`,
/// `/var/tmp` and the target directory's scratch space that the `postgres` user can reach (a
/// root-only `/tmp`, mode 0700, is not).
fn base_dir(as_postgres: bool) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = std::env::var_os("PG_TEST_DIR") {
        return PathBuf::from(dir);
    }
    let reachable = |dir: &Path| {
        dir.is_dir()
            && (!as_postgres
                || dir.ancestors().all(|a| std::fs::metadata(a).map(|m| m.permissions().mode() & 0o001 != 0).unwrap_or(false)))
    };
    let candidates =
        [std::env::temp_dir(), PathBuf::from("/dev/shm"), PathBuf::from("/var/tmp"), PathBuf::from(env!("CARGO_TARGET_TMPDIR"))];
    candidates.iter().find(|d| reachable(d)).cloned().unwrap_or_else(|| {
        panic!("no directory the postgres user can reach for a test cluster (tried {candidates:?}); set PG_TEST_DIR")
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("no free loopback port").port()
}

impl PgCluster {
    /// The cluster shared by the tests of this process, started if none is running.
    pub fn shared() -> Arc<PgCluster> {
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cluster) = shared.upgrade() {
            return cluster;
        }
        let cluster = Arc::new(PgCluster::start());
        *shared = Arc::downgrade(&cluster);
        cluster
    }

    /// A new, empty database on the shared cluster.
    pub fn database() -> PgDatabase {
        let cluster = PgCluster::shared();
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = postgres::Client::connect(&cluster.url("postgres"), postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot connect to the test cluster on port {}: {e:?}", cluster.port));
        admin.batch_execute(&format!("CREATE DATABASE {name}")).expect("CREATE DATABASE");
        PgDatabase { cluster, name }
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts a new cluster in a temporary directory.
    pub fn start() -> PgCluster {
        let bin = find_bin();
        let as_postgres = is_root();
        let dir = base_dir(as_postgres).join(format!("coapgate-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("socket")).expect("create the cluster directory");
        if as_postgres {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status();
            assert!(matches!(status, Ok(s) if s.success()), "chown of {} to postgres failed: {status:?}", dir.display());
        }
        let mut cluster = PgCluster { dir, bin, port: 0, as_postgres };
        let data = cluster.dir.join("data");
        cluster.run(
            "initdb",
            &["-D", &data.to_string_lossy(), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"],
        );
        // A port taken between the look-up and the start makes pg_ctl fail; try a few.
        for attempt in 1..=5 {
            cluster.port = free_port();
            let options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
                cluster.port,
                cluster.dir.join("socket").display()
            );
            let log = cluster.dir.join("server.log");
            let ok = cluster.try_run(
                "pg_ctl",
                &["start", "-w", "-t", "60", "-D", &data.to_string_lossy(), "-l", &log.to_string_lossy(), "-o", &options],
            );
            if ok.is_ok() {
                return cluster;
            }
            if attempt == 5 {
                let log_text = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("pg_ctl start failed: {}\nserver log:\n{log_text}", ok.unwrap_err());
            }
        }
        unreachable!()
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn try_run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let output = self
            .command(program)
            .args(args)
            .current_dir(&self.dir)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.join(program).display()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} {args:?} failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        if let Err(e) = self.try_run(program, args) {
            panic!("{e}");
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl PgCluster {
    /// A new, empty database on this cluster (a private one, from [`PgCluster::start`]).
    pub fn create_database(self: &Arc<Self>) -> PgDatabase {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot connect to the test cluster on port {}: {e:?}", self.port));
        admin.batch_execute(&format!("CREATE DATABASE {name}")).expect("CREATE DATABASE");
        PgDatabase { cluster: self.clone(), name }
    }

    /// Stops the server as an administrator would (`pg_ctl stop -m fast`: clients are
    /// disconnected, open transactions rolled back), keeping the data for [`PgCluster::restart`].
    pub fn stop_fast(&self) {
        self.run("pg_ctl", &["stop", "-m", "fast", "-w", "-t", "60", "-D", &self.data_dir().to_string_lossy()]);
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`: every process quits at
    /// once, WAL not yet written is lost, recovery runs at the next start).
    pub fn crash(&self) {
        self.run("pg_ctl", &["stop", "-m", "immediate", "-w", "-t", "60", "-D", &self.data_dir().to_string_lossy()]);
    }

    /// Starts the stopped server again, on the same port.
    pub fn restart(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.join("socket").display()
        );
        let log = self.dir.join("server.log");
        self.run(
            "pg_ctl",
            &["start", "-w", "-t", "60", "-D", &self.data_dir().to_string_lossy(), "-l", &log.to_string_lossy(), "-o", &options],
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.port != 0 {
            let data = self.data_dir();
            let _ = self.try_run("pg_ctl", &["stop", "-m", "immediate", "-w", "-D", &data.to_string_lossy()]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
