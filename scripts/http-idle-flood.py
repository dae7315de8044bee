#!/usr/bin/env python3
"""20,000 idle HTTP connections against a running coapgate (issue #13): opens COUNT TCP
connections to the REST port that never send a byte (from several processes, since one process
may hold fewer descriptors than that), then checks that a login still succeeds and how long it
took, and how many of the idle ones the server had closed. Loopback only; closes everything it
opened.

    scripts/http-idle-flood.py HTTP_PORT PASSWORD [COUNT]
"""
import json, os, resource, socket, sys, time, urllib.request

port, password = int(sys.argv[1]), sys.argv[2]
count = int(sys.argv[3]) if len(sys.argv) > 3 else 20000
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
per_process = max(1, min(count, hard - 100))
children = []
started = time.time()
for first in range(0, count, per_process):
    n = min(per_process, count - first)
    opened_r, opened_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(opened_r); os.close(go_w)
        conns, refused = [], 0
        for _ in range(n):
            s = socket.socket()
            s.settimeout(5)
            try:
                s.connect(("127.0.0.1", port))
                conns.append(s)
            except OSError:
                refused += 1
                s.close()
        os.write(opened_w, f"{len(conns)} {refused}\n".encode())
        os.read(go_r, 1)  # the parent has logged in
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
        os.write(opened_w, f"{closed}\n".encode())
        os._exit(0)
    os.close(opened_w); os.close(go_r)
    children.append((pid, os.fdopen(opened_r), go_w))
opened = refused = 0
for _, reader, _ in children:
    a, b = reader.readline().split()
    opened, refused = opened + int(a), refused + int(b)
print(f"opened {opened} idle connections ({refused} refused) in {time.time() - started:.1f} s")
body = json.dumps({"username": "tenant@thingsboard.org", "password": password}).encode()
t = time.time()
req = urllib.request.Request(f"http://127.0.0.1:{port}/api/auth/login", body, {"content-type": "application/json"})
with urllib.request.urlopen(req, timeout=30) as r:
    ok = r.status == 200 and "token" in json.loads(r.read())
print(f"login while they are open: {'200 with a token' if ok else 'FAILED'} in {(time.time() - t) * 1000:.0f} ms")
closed = 0
for pid, reader, go_w in children:
    os.write(go_w, b"x")
    closed += int(reader.readline())
    os.waitpid(pid, 0)
print(f"closed by the server by then: {closed} of {opened}")
