//! Behaviour of the worker pool: throughput, back-pressure, robustness.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coapgate_script::{
    DecodeJob, DecoderScript, EnginePool, Limits, PoolConfig, ScriptError, SubmitError,
};
use serde_json::{Value, json};

fn pool(workers: usize, queue_capacity: usize) -> EnginePool {
    EnginePool::start(PoolConfig {
        workers,
        queue_capacity,
        limits: Limits {
            timeout: Duration::from_millis(200),
            ..Limits::default()
        },
    })
}

type Outcome = (Result<Value, ScriptError>, Duration, String);

fn job(
    script: &Arc<DecoderScript>,
    payload: &[u8],
    results: &crossbeam_channel::Sender<Outcome>,
) -> DecodeJob {
    let tx = results.clone();
    DecodeJob {
        script: Arc::clone(script),
        payload: payload.into(),
        metadata: Arc::new(BTreeMap::new()),
        source: None,
        on_done: Box::new(move |result, took| {
            let thread = std::thread::current().name().unwrap_or("").to_string();
            tx.send((result, took, thread)).unwrap();
        }),
    }
}

#[test]
fn thousand_jobs_over_two_workers_all_complete() {
    let pool = pool(2, 64);
    assert_eq!(pool.workers(), 2);
    let script = Arc::new(DecoderScript::js(
        uuid::Uuid::new_v4(),
        1,
        "return { n: parseInt(decodeToString(payload), 10) * 2 };",
    ));
    let (tx, rx) = crossbeam_channel::unbounded();
    let total = 1000;
    for i in 0..total {
        let mut j = job(&script, i.to_string().as_bytes(), &tx);
        // The producer retries on a full queue, as a well-behaved client would.
        loop {
            match pool.try_submit(j) {
                Ok(()) => break,
                Err(SubmitError::Full(back)) => {
                    j = back;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    let mut seen = vec![false; total];
    let mut threads = std::collections::HashSet::new();
    for _ in 0..total {
        let (result, _, thread) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        let n = result.unwrap()["n"].as_u64().unwrap() as usize / 2;
        assert!(!seen[n], "duplicate result {n}");
        seen[n] = true;
        threads.insert(thread);
    }
    assert!(seen.iter().all(|s| *s));
    assert!(
        threads.iter().all(|t| t.starts_with("script-")),
        "{threads:?}"
    );
    pool.shutdown();
}

#[test]
fn full_queue_refuses_without_blocking_and_returns_the_job() {
    let pool = pool(1, 2);
    let script = Arc::new(DecoderScript::js(uuid::Uuid::new_v4(), 1, "return 1;"));
    // Park the only worker inside a completion callback.
    let gate = Arc::new(Mutex::new(()));
    let held = gate.lock().unwrap();
    let (started_tx, started_rx) = crossbeam_channel::bounded(1);
    let blocker = DecodeJob {
        script: Arc::clone(&script),
        payload: Arc::from(&[][..]),
        metadata: Arc::new(BTreeMap::new()),
        source: None,
        on_done: Box::new({
            let gate = Arc::clone(&gate);
            move |_, _| {
                started_tx.send(()).unwrap();
                drop(gate.lock().unwrap());
            }
        }),
    };
    pool.try_submit(blocker).unwrap();
    started_rx.recv_timeout(Duration::from_secs(10)).unwrap();

    let (tx, rx) = crossbeam_channel::unbounded();
    pool.try_submit(job(&script, b"a", &tx)).unwrap();
    pool.try_submit(job(&script, b"b", &tx)).unwrap();
    assert_eq!(pool.queue_len(), 2);
    let refused = pool.try_submit(job(&script, b"c", &tx)).unwrap_err();
    assert!(matches!(refused, SubmitError::Full(_)));
    assert_eq!(refused.to_script_error(), ScriptError::PoolFull);
    assert_eq!(&*refused.into_job().payload, b"c");

    drop(held);
    for _ in 0..2 {
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)).unwrap().0,
            Ok(json!(1))
        );
    }
    pool.shutdown();
}

#[test]
fn workers_survive_script_errors_and_callback_panics() {
    let pool = pool(1, 16);
    let (tx, rx) = crossbeam_channel::unbounded();
    let bad = Arc::new(DecoderScript::js(
        uuid::Uuid::new_v4(),
        1,
        "while (true) {}",
    ));
    let broken = Arc::new(DecoderScript::js(uuid::Uuid::new_v4(), 1, "return ;;{"));
    let good = Arc::new(DecoderScript::js(
        uuid::Uuid::new_v4(),
        1,
        "return payload;",
    ));
    pool.try_submit(job(&bad, b"", &tx)).unwrap();
    pool.try_submit(job(&broken, b"", &tx)).unwrap();
    pool.try_submit(DecodeJob {
        script: Arc::clone(&good),
        payload: Arc::from(&[][..]),
        metadata: Arc::new(BTreeMap::new()),
        source: None,
        on_done: Box::new(|_, _| panic!("callback bug")),
    })
    .unwrap();
    pool.try_submit(job(&good, &[7, 8], &tx)).unwrap();

    let timeout = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(matches!(timeout.0, Err(ScriptError::Timeout { .. })));
    assert!(timeout.1 >= Duration::from_millis(200));
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap().0,
        Err(ScriptError::Compile { .. })
    ));
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap().0,
        Ok(json!([7, 8]))
    );
    pool.shutdown();
}

#[test]
fn shutdown_drains_queued_jobs() {
    let pool = pool(2, 256);
    let script = Arc::new(DecoderScript::js(uuid::Uuid::new_v4(), 1, "return 0;"));
    let done = Arc::new(AtomicUsize::new(0));
    for _ in 0..200 {
        let done = Arc::clone(&done);
        pool.try_submit(DecodeJob {
            script: Arc::clone(&script),
            payload: Arc::from(&[][..]),
            metadata: Arc::new(BTreeMap::new()),
            source: None,
            on_done: Box::new(move |r, _| {
                assert!(r.is_ok());
                done.fetch_add(1, Ordering::SeqCst);
            }),
        })
        .unwrap();
    }
    pool.shutdown();
    assert_eq!(done.load(Ordering::SeqCst), 200);
}
