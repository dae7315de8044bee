#!/usr/bin/env python3
"""20,000 idle HTTP connections against a running coapgate (issue #13): opens COUNT TCP
connections to the REST port that never send a byte, then checks that a login still succeeds and
how long it took, and how many of the idle ones the server has closed. Loopback only; closes
everything it opened.

    scripts/http-idle-flood.py HTTP_PORT PASSWORD [COUNT]     (run `ulimit -n 65536` first)
"""
import json, socket, sys, time, urllib.request

port, password = int(sys.argv[1]), sys.argv[2]
count = int(sys.argv[3]) if len(sys.argv) > 3 else 20000
conns, refused = [], 0
started = time.time()
for i in range(count):
    s = socket.socket()
    s.setblocking(True)
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
        conns.append(s)
    except OSError:
        refused += 1
        s.close()
print(f"opened {len(conns)} idle connections ({refused} refused) in {time.time() - started:.1f} s")
body = json.dumps({"username": "tenant@thingsboard.org", "password": password}).encode()
t = time.time()
req = urllib.request.Request(f"http://127.0.0.1:{port}/api/auth/login", body, {"content-type": "application/json"})
with urllib.request.urlopen(req, timeout=30) as r:
    ok = r.status == 200 and "token" in json.loads(r.read())
print(f"login while they are open: {'200 with a token' if ok else 'FAILED'} in {(time.time() - t) * 1000:.0f} ms")
closed = 0
for s in conns:
    s.setblocking(False)
    try:
        if s.recv(1) == b"":
            closed += 1
    except BlockingIOError:
        pass
    except OSError:
        closed += 1
print(f"closed by the server so far: {closed} of {len(conns)}")
for s in conns:
    s.close()
