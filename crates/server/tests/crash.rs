//! Exactly once across a crash: under load the server is killed with SIGKILL and restarted on
//! the same data; every uplink that got 2.01 is stored, and CONs retransmitted across the
//! restart (the same bytes from the same port) are answered without being stored twice. The
//! scenario is `common::acknowledged_uplinks_survive_kill_9`, shared with the PostgreSQL run.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn acknowledged_uplinks_survive_kill_9_and_retransmissions_are_stored_once() {
    acknowledged_uplinks_survive_kill_9(&|dir, env| Server::start_in(dir, env, &[]), temp_dir("crash"), Duration::from_millis(800));
}
