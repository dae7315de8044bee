//! The sandbox against hostile or sloppy scripts: isolation between scripts,
//! ThingsBoard-style blocking, fairness between integrations, resource
//! limits, and the modern JavaScript that published converters rely on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coapgate_script::{
    DecodeJob, DecoderScript, Engine, EnginePool, Limits, PoolConfig, ScriptError,
};
use serde_json::{Value, json};

fn script(source: &str) -> DecoderScript {
    DecoderScript::js(uuid::Uuid::new_v4(), 1, source)
}

fn no_meta() -> BTreeMap<String, String> {
    BTreeMap::new()
}

type Outcome = (Result<Value, ScriptError>, Duration);

fn submit(
    pool: &EnginePool,
    s: &Arc<DecoderScript>,
    payload: &[u8],
    tx: &crossbeam_channel::Sender<(usize, Outcome)>,
    tag: usize,
) {
    let tx = tx.clone();
    pool.try_submit(DecodeJob {
        script: Arc::clone(s),
        payload: payload.into(),
        metadata: std::sync::Arc::new(no_meta()),
        source: None,
        on_done: Box::new(move |r, took| {
            let _ = tx.send((tag, (r, took)));
        }),
    })
    .unwrap();
}

/// Runs one job on the pool and waits for its outcome.
fn run_on(pool: &EnginePool, s: &Arc<DecoderScript>, payload: &[u8]) -> Outcome {
    let (tx, rx) = crossbeam_channel::bounded(1);
    submit(pool, s, payload, &tx, 0);
    rx.recv_timeout(Duration::from_secs(20)).unwrap().1
}

fn blocked_text(s: &DecoderScript) -> String {
    format!(
        "Script invocation is blocked due to maximum error count 3, scriptId {}!",
        s.id
    )
}

// ---------------------------------------------------------------- isolation

#[test]
fn scripts_do_not_see_each_others_globals_or_prototype_patches() {
    let pool = EnginePool::start(PoolConfig {
        workers: 1,
        queue_capacity: 16,
        limits: Limits::default(),
    });
    let a = Arc::new(script(
        "leaked = 42; globalThis.alsoLeaked = 'x';\n\
         Array.prototype.push = function () { return 'pwned'; };\n\
         Object.prototype.polluted = true;\n\
         JSON.parse = function () { return 'evil'; };\n\
         return typeof leaked;",
    ));
    let b = Arc::new(script(
        "var arr = []; arr.push(1);\n\
         return { leaked: typeof leaked, also: typeof alsoLeaked, arr: arr,\n\
                  polluted: ({}).polluted === undefined, json: JSON.parse('[1]') };",
    ));
    assert_eq!(run_on(&pool, &a, b"").0, Ok(json!("number")));
    assert_eq!(
        run_on(&pool, &b, b"").0,
        Ok(
            json!({"leaked": "undefined", "also": "undefined", "arr": [1], "polluted": true, "json": [1]})
        )
    );
    // A's own context keeps its state between its calls (like a Node
    // module-level variable), B's state stays clean.
    let a2 = Arc::new(DecoderScript {
        source: "counter = (typeof counter === 'number' ? counter : 0) + 1; return counter;".into(),
        ..script("")
    });
    assert_eq!(run_on(&pool, &a2, b"").0, Ok(json!(1)));
    assert_eq!(run_on(&pool, &a2, b"").0, Ok(json!(2)));
    assert_eq!(
        run_on(&pool, &b, b"").0.unwrap()["leaked"],
        json!("undefined")
    );
    pool.shutdown();
}

#[test]
fn a_new_version_gets_a_fresh_context() {
    let mut engine = Engine::new(Limits::default());
    let m = no_meta();
    let mut s = script("Array.prototype.push = null; x = 1; return 1;");
    engine.decode(&s, b"", &m).unwrap();
    s.version = 2;
    s.source = "var a = []; a.push(2); return [typeof x, a];".into();
    assert_eq!(engine.decode(&s, b"", &m), Ok(json!(["undefined", [2]])));
}

// ----------------------------------------------------------------- blocking

fn blocking_pool(workers: usize, block: Duration) -> EnginePool {
    EnginePool::start(PoolConfig {
        workers,
        queue_capacity: 256,
        limits: Limits {
            timeout: Duration::from_millis(50),
            block_duration: block,
            ..Limits::default()
        },
    })
}

#[test]
fn three_timeouts_block_the_script_until_the_block_ends() {
    let pool = blocking_pool(1, Duration::from_millis(600));
    let bad = Arc::new(script("while (true) {}"));
    for _ in 0..3 {
        assert!(matches!(
            run_on(&pool, &bad, b"").0,
            Err(ScriptError::Timeout { .. })
        ));
    }
    let (r, took) = run_on(&pool, &bad, b"");
    let err = r.unwrap_err();
    assert_eq!(err.to_string(), blocked_text(&bad));
    assert_eq!(
        err,
        ScriptError::Blocked {
            script_id: bad.id,
            max_errors: 3
        }
    );
    assert!(!err.counts_towards_block() && err.is_script_fault());
    assert!(
        took < Duration::from_millis(20),
        "blocked jobs do not run: {took:?}"
    );
    // Other scripts are unaffected.
    let good = Arc::new(script("return 1;"));
    assert_eq!(run_on(&pool, &good, b"").0, Ok(json!(1)));
    // A new version starts unblocked.
    let fixed = Arc::new(DecoderScript {
        version: 2,
        source: "return 'fixed';".into(),
        ..(*bad).clone()
    });
    assert_eq!(run_on(&pool, &fixed, b"").0, Ok(json!("fixed")));
    // After the block the old code runs (and times out) again.
    let bad_again = Arc::new(script("while (true) {}"));
    for _ in 0..3 {
        let _ = run_on(&pool, &bad_again, b"");
    }
    assert!(matches!(
        run_on(&pool, &bad_again, b"").0,
        Err(ScriptError::Blocked { .. })
    ));
    std::thread::sleep(Duration::from_millis(650));
    assert!(matches!(
        run_on(&pool, &bad_again, b"").0,
        Err(ScriptError::Timeout { .. })
    ));
    pool.shutdown();
}

#[test]
fn compile_errors_count_runtime_errors_do_not_and_success_resets() {
    let pool = blocking_pool(1, Duration::from_secs(60));
    // Compile errors count.
    let broken = Arc::new(script("return ;;{"));
    for _ in 0..3 {
        assert!(matches!(
            run_on(&pool, &broken, b"").0,
            Err(ScriptError::Compile { .. })
        ));
    }
    assert_eq!(
        run_on(&pool, &broken, b"").0.unwrap_err().to_string(),
        blocked_text(&broken)
    );
    // Errors the script throws itself never block it.
    let thrower = Arc::new(script("throw new Error('bad payload');"));
    for _ in 0..10 {
        assert!(matches!(
            run_on(&pool, &thrower, b"").0,
            Err(ScriptError::Runtime { .. })
        ));
    }
    // Only consecutive counted errors block: a success resets the count.
    let flaky = Arc::new(script("if (payload[0] === 1) while (true) {} return 'ok';"));
    for (payload, expect_ok) in [
        (1, false),
        (1, false),
        (0, true),
        (1, false),
        (1, false),
        (0, true),
        (1, false),
        (1, false),
        (1, false),
    ] {
        let r = run_on(&pool, &flaky, &[payload]).0;
        if expect_ok {
            assert_eq!(r, Ok(json!("ok")));
        } else {
            assert!(matches!(r, Err(ScriptError::Timeout { .. })), "{r:?}");
        }
    }
    assert!(matches!(
        run_on(&pool, &flaky, &[0]).0,
        Err(ScriptError::Blocked { .. })
    ));
    // Result size and memory limits count too.
    let huge = Arc::new(script("return 'x'.repeat(2 * 1024 * 1024);"));
    for _ in 0..3 {
        assert!(matches!(
            run_on(&pool, &huge, b"").0,
            Err(ScriptError::TooLarge { .. })
        ));
    }
    assert!(matches!(
        run_on(&pool, &huge, b"").0,
        Err(ScriptError::Blocked { .. })
    ));
    pool.shutdown();
}

#[test]
fn block_is_shared_by_all_workers() {
    let pool = blocking_pool(3, Duration::from_secs(60));
    let bad = Arc::new(script("while (true) {}"));
    let (tx, rx) = crossbeam_channel::unbounded();
    for i in 0..30 {
        submit(&pool, &bad, b"", &tx, i);
    }
    let outcomes: Vec<_> = (0..30)
        .map(|_| rx.recv_timeout(Duration::from_secs(20)).unwrap().1.0)
        .collect();
    let timeouts = outcomes
        .iter()
        .filter(|r| matches!(r, Err(ScriptError::Timeout { .. })))
        .count();
    let blocked = outcomes
        .iter()
        .filter(|r| matches!(r, Err(ScriptError::Blocked { .. })))
        .count();
    assert_eq!(timeouts + blocked, 30);
    // At most the jobs already running when the third error arrived.
    assert!(timeouts <= 3 + 2, "{timeouts} timeouts");
    pool.shutdown();
}

// ----------------------------------------------------------------- fairness

#[test]
fn an_endless_script_does_not_slow_down_other_integrations() {
    let timeout = Duration::from_millis(200);
    let pool = EnginePool::start(PoolConfig {
        workers: 2,
        queue_capacity: 128,
        limits: Limits {
            timeout,
            ..Limits::default()
        },
    });
    let slow = Arc::new(script("while (true) {}"));
    let fast = Arc::new(script("return payload[0] + 1;"));
    let (tx, rx) = crossbeam_channel::unbounded();
    let started = Instant::now();
    for i in 0..50 {
        submit(&pool, &slow, b"", &tx, 1000 + i);
        submit(&pool, &fast, &[i as u8], &tx, i);
    }
    let mut fast_done = 0;
    let mut slow_done = 0;
    let mut slow_done_when_fast_finished = None;
    let mut fast_finished_at = None;
    let mut timeouts = 0;
    let mut blocked = 0;
    for _ in 0..100 {
        let (tag, (r, _)) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        if tag >= 1000 {
            slow_done += 1;
            match r {
                Err(ScriptError::Timeout { .. }) => timeouts += 1,
                Err(ScriptError::Blocked { .. }) => blocked += 1,
                other => panic!("{other:?}"),
            }
        } else {
            assert_eq!(r, Ok(json!(tag + 1)));
            fast_done += 1;
            if fast_done == 50 {
                fast_finished_at = Some(started.elapsed());
                slow_done_when_fast_finished = Some(slow_done);
            }
        }
    }
    let fast_took = fast_finished_at.unwrap();
    // Without fairness the fast jobs would wait behind ~50 × 200 ms / 2.
    assert!(
        fast_took < Duration::from_millis(1500),
        "fast jobs took {fast_took:?}"
    );
    assert!(
        slow_done_when_fast_finished.unwrap() < 25,
        "{slow_done_when_fast_finished:?} slow jobs finished before the fast ones"
    );
    // Blocking kicked in: only the first few slow jobs actually ran.
    assert!(timeouts <= 3 + 1, "{timeouts} timeouts");
    assert_eq!(blocked, 50 - timeouts);
    assert!(started.elapsed() < Duration::from_secs(3));
    pool.shutdown();
}

// ----------------------------------------------------------- hostile scripts

#[derive(Debug)]
enum Kind {
    Timeout,
    Memory,
    TooLarge,
    /// A runtime error whose message contains the text.
    Runtime(&'static str),
    /// A memory-limit error or an error with the given text: what QuickJS
    /// reports first depends on the allocation pattern.
    MemoryOr(&'static str),
}

fn kind_matches(kind: &Kind, err: &ScriptError) -> bool {
    match (kind, err) {
        (Kind::Timeout, ScriptError::Timeout { .. }) => true,
        (Kind::Memory, ScriptError::MemoryLimit { .. }) => true,
        (Kind::TooLarge, ScriptError::TooLarge { .. }) => true,
        (Kind::Runtime(text), ScriptError::Runtime { message, .. }) => message.contains(text),
        (Kind::MemoryOr(_), ScriptError::MemoryLimit { .. }) => true,
        (Kind::MemoryOr(text), e) => e.to_string().contains(text),
        _ => false,
    }
}

#[test]
fn hostile_scripts_fail_cleanly_and_the_worker_stays_usable() {
    let limits = Limits {
        timeout: Duration::from_millis(300),
        memory_bytes: 32 * 1024 * 1024,
        ..Limits::default()
    };
    let cases: &[(&str, &str, Kind)] = &[
        ("endless loop", "while (true) {}", Kind::Timeout),
        (
            "catching the interrupt",
            "for (;;) { try { while (true) {} } catch (e) {} }",
            Kind::Timeout,
        ),
        (
            "catastrophic regex",
            "return /^(a+)+$/.test('a'.repeat(40) + 'b');",
            Kind::Timeout,
        ),
        (
            "endless toJSON",
            "return { toJSON() { while (true) {} } };",
            Kind::Timeout,
        ),
        (
            "endless getter",
            "return { get x() { for (;;) {} } };",
            Kind::Timeout,
        ),
        (
            "endless promise chain",
            "function f() { Promise.resolve().then(f); } f(); return 1;",
            Kind::Timeout,
        ),
        (
            "endless async function",
            "(async () => { await null; while (true) {} })(); return 1;",
            Kind::Timeout,
        ),
        (
            "deep recursion",
            "function f() { return f(); } f();",
            Kind::Runtime("Maximum call stack size exceeded"),
        ),
        (
            "deep recursion through toString",
            "var o = {}; o.toString = function () { return String(o); }; return String(o);",
            Kind::Runtime("stack"),
        ),
        (
            "deeply nested result",
            "var o = {}; for (var i = 0; i < 1000000; i++) o = {o: o}; return o;",
            Kind::MemoryOr("stack"),
        ),
        (
            "deeply nested JSON.parse",
            "return JSON.parse('['.repeat(1000000));",
            Kind::MemoryOr("stack"),
        ),
        (
            "unbounded objects",
            "var a = []; while (true) a.push({k: 'v' + a.length});",
            Kind::Memory,
        ),
        (
            "unbounded strings",
            "var s = 'x'; while (true) s = s + s;",
            Kind::MemoryOr("string too long"),
        ),
        (
            "huge ArrayBuffer",
            "return new ArrayBuffer(1 << 30).byteLength;",
            Kind::Memory,
        ),
        (
            "huge typed array",
            "return new Float64Array(100 * 1024 * 1024).length;",
            Kind::Memory,
        ),
        (
            "10 MB result",
            "return 'x'.repeat(10 * 1024 * 1024);",
            Kind::TooLarge,
        ),
        (
            "result of a million numbers",
            "return new Array(1000000).fill(1);",
            Kind::TooLarge,
        ),
        (
            "cyclic result",
            "var o = {}; o.self = o; return o;",
            Kind::Runtime("circular"),
        ),
        (
            "promise jobs flood",
            "for (var i = 0; i < 10000000; i++) Promise.resolve(i).then(function () {}); return 1;",
            Kind::MemoryOr("timed out"),
        ),
    ];
    // Scripts that must be stopped by a limit other than time run with a time limit they
    // cannot reach first: on a loaded machine a debug build took more than 300 ms to fill
    // 32 MiB, and the case failed on the clock instead of the limit it tests.
    let untimed = Limits {
        timeout: Duration::from_secs(20),
        ..limits.clone()
    };
    let mut timed_engine = Engine::new(limits.clone());
    let mut untimed_engine = Engine::new(untimed);
    let m = no_meta();
    let normal = script("return decodeToJson(payload).n + 1;");
    for engine in [&mut timed_engine, &mut untimed_engine] {
        // Warm up so the normal script is cached next to the hostile ones.
        assert_eq!(engine.decode(&normal, br#"{"n":1}"#, &m), Ok(json!(2)));
    }
    for (name, source, kind) in cases {
        let by_the_clock = matches!(kind, Kind::Timeout | Kind::Runtime(_) | Kind::MemoryOr("timed out"));
        let engine = if by_the_clock { &mut timed_engine } else { &mut untimed_engine };
        let started = Instant::now();
        let err = engine.decode(&script(source), b"", &m).expect_err(name);
        let took = started.elapsed();
        println!("{name}: {err} ({took:?})");
        assert!(
            kind_matches(kind, &err),
            "{name}: expected {kind:?}, got {err:?}"
        );
        if by_the_clock {
            assert!(took < Duration::from_secs(3), "{name}: took {took:?}");
        }
        assert_eq!(
            engine.decode(&normal, br#"{"n":41}"#, &m),
            Ok(json!(42)),
            "{name}: next job on the same worker"
        );
        // A short follow-up timing check: leftovers (such as queued promise
        // jobs) must not eat the next script's time.
        let started = Instant::now();
        engine.decode(&normal, br#"{"n":0}"#, &m).unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "{name}: next job took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn memory_kept_by_one_script_does_not_fail_another() {
    let limits = Limits {
        memory_bytes: 16 * 1024 * 1024,
        ..Limits::default()
    };
    let mut engine = Engine::new(limits);
    let m = no_meta();
    let hoarder = script(
        "keep = typeof keep === 'undefined' ? [] : keep;\n\
         keep.push(new Uint8Array(1024 * 1024)); return keep.length;",
    );
    let victim =
        script("var a = []; for (var i = 0; i < 20000; i++) a.push({i: i}); return a.length;");
    for _ in 0..40 {
        let _ = engine.decode(&hoarder, b"", &m);
        assert_eq!(engine.decode(&victim, b"", &m), Ok(json!(20000)));
    }
}

#[test]
fn promise_jobs_run_and_do_not_leak_into_other_scripts() {
    let mut engine = Engine::new(Limits::default());
    let m = no_meta();
    // Jobs run after the result is fixed (like microtasks after a return),
    // in the script's own context.
    let s = script(
        "var r = {v: typeof g}; Promise.resolve().then(function () { r.v = 2; g = 1; }); return r;",
    );
    assert_eq!(engine.decode(&s, b"", &m), Ok(json!({"v": "undefined"})));
    assert_eq!(engine.decode(&s, b"", &m), Ok(json!({"v": "number"})));
    assert_eq!(
        engine.decode(&script("return typeof g;"), b"", &m),
        Ok(json!("undefined"))
    );
    // An async decoder's promise is not awaited (as in ThingsBoard's
    // executor, which JSON-serialises the return value): it becomes `{}`.
    assert_eq!(
        engine.decode(&script("return (async () => 1)();"), b"", &m),
        Ok(json!({}))
    );
}

// ------------------------------------------------- modern JavaScript parity

#[test]
fn javascript_used_by_published_converters_works() {
    let cases: &[(&str, &str, &[u8], Value)] = &[
        (
            "atob/btoa",
            "return [atob('aGk='), btoa('hi')];",
            b"",
            json!(["hi", "aGk="]),
        ),
        (
            "String()",
            "return [String(12), String(null), String([1,2])];",
            b"",
            json!(["12", "null", "1,2"]),
        ),
        (
            "parseInt",
            "return [parseInt('ff', 16), parseInt('42abc'), parseInt('0x1A')];",
            b"",
            json!([255, 42, 26]),
        ),
        (
            "new Date / Date.now",
            "var d = new Date(Date.UTC(2024, 0, 2, 3, 4, 5)); var n = Date.now();\n\
             return [d.toISOString(), d.getTime(), new Date('2024-01-02T03:04:05Z').getTime(),\n\
                     typeof n, n > 1.6e12, new Date(0).getUTCFullYear()];",
            b"",
            json!([
                "2024-01-02T03:04:05.000Z",
                1_704_164_645_000_i64,
                1_704_164_645_000_i64,
                "number",
                true,
                1970
            ]),
        ),
        (
            "JSON.parse",
            "return JSON.parse('{\"a\":[1,2.5,null]}');",
            b"",
            json!({"a": [1, 2.5, null]}),
        ),
        (
            "Object.assign/entries/fromEntries",
            "var o = Object.assign({a: 1}, {b: 2});\n\
             return [Object.entries(o), Object.fromEntries(Object.entries(o).map(([k, v]) => [k, v * 2]))];",
            b"",
            json!([[["a", 1], ["b", 2]], {"a": 2, "b": 4}]),
        ),
        (
            "Array.from / Uint8Array.from",
            "return [Array.from('ab'), Array.from(Uint8Array.from(payload)), Array.from({length: 2}, (_, i) => i)];",
            &[1, 255],
            json!([["a", "b"], [1, 255], [0, 1]]),
        ),
        (
            "charCodeAt / fromCharCode",
            "var s = atob('AQL/'); var b = []; for (var i = 0; i < s.length; i++) b.push(s.charCodeAt(i));\n\
             return [b, String.fromCharCode.apply(null, [104, 105])];",
            b"",
            json!([[1, 2, 255], "hi"]),
        ),
        (
            "Function.prototype.bind",
            "function add(a, b) { return this.k + a + b; } var f = add.bind({k: 1}, 2); return f(3);",
            b"",
            json!(6),
        ),
        (
            "filter / includes / push / map / reduce / slice",
            "var a = [1, 2, 3, 4].filter(x => x % 2 === 0); a.push(6);\n\
             return [a, a.includes(4), 'abc'.includes('b'), a.map(x => x * 10), a.reduce((s, x) => s + x, 0),\n\
                     a.slice(1), 'hello'.slice(-3), payload.slice(0, 1)];",
            &[9, 8],
            json!([[2, 4, 6], true, true, [20, 40, 60], 12, [4, 6], "llo", [9]]),
        ),
        (
            "typeof / try-catch / const / let / arrows",
            "const f = (x) => typeof x; let r;\n\
             try { undefinedFn(); } catch (e) { r = e.name; } finally { r += '!'; }\n\
             return [f(1), f('s'), f(null), f(undefined), f({}), f(f), r];",
            b"",
            json!([
                "number",
                "string",
                "object",
                "undefined",
                "object",
                "function",
                "ReferenceError!"
            ]),
        ),
        (
            "Math.pow / padStart / toString(16) / toFixed",
            "return [Math.pow(2, 10), 2 ** 3, (5).toString(2).padStart(8, '0'), (255).toString(16),\n\
                     (0x0a).toString(16).padStart(2, '0').toUpperCase(), Number((25.678).toFixed(2)), (1.005).toFixed(1),\n\
                     Math.round(2.5), Math.log(1)];",
            b"",
            json!([1024, 8, "00000101", "ff", "0A", 25.68, "1.0", 3, 0]),
        ),
        (
            "bytes to hex",
            "return payload.map(b => ('0' + (b & 0xFF).toString(16)).slice(-2)).join('');",
            &[0, 15, 255],
            json!("000fff"),
        ),
        (
            "spread / destructuring / default and rest parameters",
            "const [a, , b = 5, ...rest] = [1, 2, undefined, 4, 5]; const {x, y: {z} = {z: 0}, ...o} = {x: 1, q: 2};\n\
             const f = (p, ...r) => p + r.length;\n\
             return [a, b, rest, x, z, o, [...'ab', ...[1]], {...{k: 1}, l: 2}, f(1, 2, 3), Math.max(...payload)];",
            &[3, 7, 5],
            json!([1, 5, [4, 5], 1, 0, {"q": 2}, ["a", "b", 1], {"k": 1, "l": 2}, 3, 7]),
        ),
        (
            "classes / getters / static / private fields",
            "class Sensor { #raw; static scale = 10; constructor(r) { this.#raw = r; }\n\
               get value() { return this.#raw / Sensor.scale; } }\n\
             class Temp extends Sensor { get unit() { return 'C'; } }\n\
             const t = new Temp(215); return [t.value, t.unit, t instanceof Sensor];",
            b"",
            json!([21.5, "C", true]),
        ),
        (
            "BigInt",
            "const v = (BigInt(payload[0]) << 56n) | BigInt(payload[1]); return [v.toString(), Number(v & 0xFFn), typeof v];",
            &[1, 2],
            json!(["72057594037927938", 2, "bigint"]),
        ),
        (
            "DataView floats and 64-bit ints",
            "const dv = new DataView(new Uint8Array(payload).buffer);\n\
             return [dv.getFloat32(0), dv.getBigUint64(0).toString(), dv.getInt8(0)];",
            &[0x41, 0xC8, 0, 0, 0, 0, 0, 1],
            json!([25, "4740038607807447041", 65]),
        ),
        (
            "optional chaining / nullish / logical assignment",
            "let o = {a: {b: 0}}; let c = null; c ??= 'd'; o.n ||= 3;\n\
             return [o?.a?.b ?? 9, o.x?.y ?? 'none', c, o.n];",
            b"",
            json!([0, "none", "d", 3]),
        ),
        (
            "template literals / String methods",
            "const s = ' Ab,cD '; return [`${s.trim().toLowerCase()}`, s.split(','), 'a-b-c'.replaceAll('-', '+'),\n\
                     'abc'.at(-1), 'x'.repeat(3), 'abc'.startsWith('ab'), 'abc'.endsWith('bc'), 'a1b2'.replace(/\\d/g, '')];",
            b"",
            json!([
                "ab,cd",
                [" Ab", "cD "],
                "a+b+c",
                "c",
                "xxx",
                true,
                true,
                "ab"
            ]),
        ),
        (
            "Map / Set / for-of / generators",
            "const m = new Map([['a', 1]]); m.set('b', 2); const s = new Set([1, 1, 2]);\n\
             function* g() { yield 1; yield 2; } let sum = 0; for (const v of g()) sum += v;\n\
             return [[...m.keys()], s.size, sum, Array.from(m.entries())];",
            b"",
            json!([["a", "b"], 2, 3, [["a", 1], ["b", 2]]]),
        ),
        (
            "array helpers: find/some/every/flat/flatMap/sort/indexOf/splice/fill",
            "const a = [3, 1, 2];\n\
             return [a.find(x => x > 1), a.findIndex(x => x === 2), a.some(x => x > 2), a.every(x => x > 0),\n\
                     [[1], [2, [3]]].flat(2), a.flatMap(x => [x, x]), [...a].sort((x, y) => x - y), a.indexOf(2),\n\
                     new Array(3).fill(0), Array.isArray(a), a.join('-')];",
            b"",
            json!([
                3,
                2,
                true,
                true,
                [1, 2, 3],
                [3, 3, 1, 1, 2, 2],
                [1, 2, 3],
                2,
                [0, 0, 0],
                true,
                "3-1-2"
            ]),
        ),
        (
            "decodeToJson + metadata-like use",
            "const d = decodeToJson(payload); return {deviceName: d.id, telemetry: {ts: new Date(d.ts).getTime(), values: {t: d.t}}};",
            br#"{"id":"dev","ts":"2024-01-01T00:00:00Z","t":1.5}"#,
            json!({"deviceName": "dev", "telemetry": {"ts": 1_704_067_200_000_i64, "values": {"t": 1.5}}}),
        ),
        (
            "Number helpers / isNaN / parseFloat",
            "return [Number('0x10'), Number.isInteger(5.0), isNaN('x'), parseFloat('2.5abc'), Number.parseFloat('1e3'),\n\
                     (123.456).toPrecision(4), Number.MAX_SAFE_INTEGER, (-7 >>> 0).toString(16), -7 >> 1];",
            b"",
            json!([
                16,
                true,
                true,
                2.5,
                1000,
                "123.5",
                9_007_199_254_740_991_i64,
                "fffffff9",
                -4
            ]),
        ),
    ];
    let mut engine = Engine::new(Limits::default());
    let m = no_meta();
    for (name, source, payload, expected) in cases {
        match engine.decode(&script(source), payload, &m) {
            Ok(v) => assert_eq!(&v, expected, "{name}"),
            Err(e) => panic!("{name}: {e}"),
        }
    }
}
