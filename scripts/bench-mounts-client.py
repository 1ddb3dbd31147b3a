#!/usr/bin/env python3
"""The API client of bench-mounts.sh: drives a nydusd-compatible daemon (ours in `virtiofs`
mode, or nydusd 2.2) through its HTTP API on a unix socket, as Kata's runtime does (a new
connection per call, Content-Type: application/json, 204 = success), and times it.

Usage:
  bench-mounts-client.py wait API_SOCK
      until GET /api/v1/daemon answers "state": "RUNNING"
  bench-mounts-client.py mount API_SOCK MOUNTPOINT COUNT SOURCE CONFIG_FILE
      POSTs COUNT mounts of SOURCE at MOUNTPOINT ({i} is replaced by 0..COUNT-1);
      prints {"post_ms": [...]}
  bench-mounts-client.py latency API_SOCK MOUNTPOINT COUNT SOURCE CONFIG_FILE FILE TREE -- FRONTEND...
      starts FRONTEND (a virtiofs-frontend command line with --read-paths-from -), waits for
      its session; then per mount: POST, and as soon as the 204 is in, has the front end look
      up and read MOUNTPOINT/FILE (checked against TREE/FILE by sha256); then DELETEs them
      all. Prints {"post_ms", "first_read_ms" (from the POST's start to the file's last
      byte), "read_us" (the front end's own lookup-to-release time), "delete_ms"}.
  bench-mounts-client.py session PID CACHE_CMD OUT_JSON -- FRONTEND...
      runs FRONTEND (a virtiofs-frontend command line with --workload ... --json
      --read-paths-from -); once its workloads are done and while its session is still up
      (the daemons end with it), reads VmRSS, RssAnon, RssFile, VmHWM and Threads of PID and
      runs the shell command CACHE_CMD (prints KiB); then ends the session and writes
      {"report": the front end's JSON report, "held": those figures} to OUT_JSON.
CONFIG_FILE holds the request's "config" string verbatim ("-" or an empty file: "").
Any failure ends the program with a message and status 1.
"""
import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("unix")
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.unix_path)
        self.sock = s


def die(msg):
    print(f"bench-mounts-client.py: {msg}", file=sys.stderr)
    sys.exit(1)


def call(api, method, target, body=None):
    conn = UnixHTTPConnection(api)
    headers = {"Content-Type": "application/json"}
    conn.request(method, target, body=body, headers=headers)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data


def wait(api):
    for _ in range(1200):
        if os.path.exists(api):
            try:
                status, data = call(api, "GET", "/api/v1/daemon")
                if json.loads(data).get("state") == "RUNNING":
                    return
            except (OSError, ValueError, http.client.HTTPException):
                pass
        time.sleep(0.05)
    die(f"{api}: the daemon never reported RUNNING")


def read_config(path):
    if path == "-":
        return ""
    with open(path) as f:
        return f.read()


def mount(api, mountpoint, source, config):
    body = json.dumps({"fs_type": "rafs", "source": source, "config": config})
    t0 = time.perf_counter()
    status, data = call(api, "POST", f"/api/v1/mount?mountpoint={mountpoint}", body)
    ms = (time.perf_counter() - t0) * 1e3
    if status != 204:
        die(f"POST mount {mountpoint}: {status} {data.decode(errors='replace')}")
    return t0, ms


def umount(api, mountpoint):
    t0 = time.perf_counter()
    status, data = call(api, "DELETE", f"/api/v1/mount?mountpoint={mountpoint}")
    ms = (time.perf_counter() - t0) * 1e3
    if status != 204:
        die(f"DELETE mount {mountpoint}: {status} {data.decode(errors='replace')}")
    return ms


def cmd_mount(api, template, count, source, config_file):
    config = read_config(config_file)
    post = [
        mount(api, template.format(i=i), source.replace("{i}", str(i)), config)[1]
        for i in range(int(count))
    ]
    print(json.dumps({"post_ms": post}))


def cmd_latency(api, template, count, source, config_file, rel, tree, frontend):
    config = read_config(config_file)
    with open(os.path.join(tree, rel), "rb") as f:
        want = hashlib.sha256(f.read()).hexdigest()
    fe = subprocess.Popen(frontend, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ready = fe.stdout.readline()
    if json.loads(ready or "{}").get("ready") is not True:
        die(f"the front end did not start its session: {ready!r}")
    post, first, read_us, delete = [], [], [], []
    points = [template.format(i=i) for i in range(int(count))]
    for i, mp in enumerate(points):
        t0, ms = mount(api, mp, source.replace("{i}", str(i)), config)
        fe.stdin.write(f"{mp}/{rel}\n")
        fe.stdin.flush()
        line = fe.stdout.readline()
        t1 = time.perf_counter()
        if not line:
            die("the front end ended early")
        answer = json.loads(line)
        if not answer["ok"] or answer["sha256"] != want:
            die(f"reading {mp}/{rel}: {answer}")
        post.append(ms)
        first.append((t1 - t0) * 1e3)
        read_us.append(answer["us"])
    for mp in points:
        delete.append(umount(api, mp))
    fe.stdin.close()
    if fe.wait() != 0:
        die(f"the front end failed (status {fe.returncode})")
    print(json.dumps({"post_ms": post, "first_read_ms": first, "read_us": read_us, "delete_ms": delete}))


def status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM", "Threads"):
                fields[key] = int(value.split()[0])
    return fields


def cmd_session(pid, cache_cmd, out_json, frontend):
    fe = subprocess.Popen(frontend, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ready = fe.stdout.readline()
    if json.loads(ready or "{}").get("ready") is not True:
        die(f"the front end's workloads did not end with a session: {ready!r}")
    held = status(pid)
    cache = subprocess.run(cache_cmd, shell=True, capture_output=True, text=True, check=True)
    held["cache_kib"] = int(cache.stdout.strip() or 0)
    fe.stdin.close()
    report = fe.stdout.read()
    if fe.wait() != 0:
        die(f"the front end failed (status {fe.returncode})")
    with open(out_json, "w") as f:
        json.dump({"report": json.loads(report), "held": held}, f)


def main():
    a = sys.argv[1:]
    if a[:1] == ["wait"] and len(a) == 2:
        wait(a[1])
    elif a[:1] == ["mount"] and len(a) == 6:
        cmd_mount(*a[1:])
    elif a[:1] == ["latency"] and len(a) > 9 and a[8] == "--":
        cmd_latency(*a[1:8], a[9:])
    elif a[:1] == ["session"] and len(a) > 5 and a[4] == "--":
        cmd_session(a[1], a[2], a[3], a[5:])
    else:
        die("usage: see the top of this file")


if __name__ == "__main__":
    main()
