"""The report at scale: ``conversations_report`` over N sessions of 10 messages (``--scale``: a million),
on a private ``redis-server`` the bench starts (a million sessions take about 1.5 GB: never the shared
Redis), in a child process whose wall time and peak resident memory are measured.

The sessions are written by a fill script in the store's layout 2 (meta hash, message set, owner
index; ``codec``'s stored shape), 100 to an owner; one in 50 ends on a reply left in progress and
has been idle for an hour (the report's stalled replies), and one in 20 is of layout 1.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from conversations.store import codec
from conversations.store.keys import KeyLayout

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = 10
PER_OWNER = 100
#: SLOWLOG entries kept: more than a million-session run logs on a busy machine (a loaded VM's
#: scheduler can stall any command past 0.5 ms), so the slowest is never dropped.
_SLOWLOG_KEPT = 200_000

# KEYS: meta, messages, legacy list, index of each session   ARGV: per session: owner, session id,
# updated_at, layout (1/2), last message in progress ('1'/'0'); then ttl_ms, the body of a completed
# message and of an in-progress one (``codec.message_body``), and a layout-1 message's tail.
_FILL = """
local per = 5
local n = (#ARGV - 4) / per
local ttl, done, open, old = ARGV[#ARGV - 3], ARGV[#ARGV - 2], ARGV[#ARGV - 1], ARGV[#ARGV]
for i = 1, n do
  local meta, msgs, legacy, index = KEYS[4 * i - 3], KEYS[4 * i - 2], KEYS[4 * i - 1], KEYS[4 * i]
  local a = per * (i - 1)
  local owner, sid, updated, layout, stalled = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local created = tonumber(updated) - 60000
  if layout == '2' then
    redis.call('HSET', meta, 'owner', owner, 'title', '', 'metadata', '{}', 'created_at', created,
               'updated_at', updated, 'count', 10, 'seq', 10, 'v', '2', 'expires_at', updated + ttl)
    local args = {}
    for m = 1, 10 do
      local body = done
      if m == 10 and stalled == '1' then body = open end
      args[#args + 1] = m
      args[#args + 1] = '{"id":' .. m .. ',"created_at":' .. (created + m) .. body
    end
    redis.call('ZADD', msgs, unpack(args))
    redis.call('PEXPIRE', msgs, ttl)
  else
    redis.call('HSET', meta, 'owner', owner, 'title', '', 'metadata', '{}', 'created_at', created,
               'updated_at', updated, 'count', 10)
    local args = {}
    for m = 1, 10 do args[#args + 1] = '{"id":' .. m .. ',"created_at":' .. (created + m) .. old end
    redis.call('RPUSH', legacy, unpack(args))
    redis.call('PEXPIRE', legacy, ttl)
  end
  redis.call('PEXPIRE', meta, ttl)
  redis.call('ZADD', index, updated, sid)
  redis.call('PEXPIRE', index, ttl)
end
return n
"""


@dataclass
class ScaleResult:
    sessions: int
    messages: int
    fill_seconds: float
    wall_seconds: float
    client_cpu_seconds: float  # the report process's CPU (startup included)
    redis_cpu_seconds: float  # the private Redis's CPU while the report ran
    max_rss_mb: float
    longest_call_ms: float
    slowest_redis_ms: float  # the slowest command Redis logged (SLOWLOG), 0 when none took 0.5 ms
    mean_script_ms: float  # Redis's mean time per script call (INFO commandstats)
    slow_calls: int  # commands that took longer than 0.5 ms
    stalled: int
    script_calls: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis() -> tuple[subprocess.Popen[bytes], int, str]:
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("the report scale run needs redis-server on PATH")
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen(
        [server, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return proc, port, workdir


def fill(
    client: redis.Redis,
    layout: KeyLayout,
    sessions: int,
    now_ms: int,
    ttl_ms: int,
    *,
    owner: str | None = None,
    mixed: bool = True,
) -> None:
    """``sessions`` sessions of 10 messages, 100 to an owner (or all ``owner``'s); ``mixed``: with
    the stalled and layout-1 ones described above."""
    sha = client.script_load(_FILL)
    done = codec.message_body("user", "a question of about sixty characters, as chat users type")
    open_ = codec.message_body("assistant", "half an answer", status="in_progress")
    old = ',"role":"user","content":"a layout-1 message","sources":[]}'
    pipe = client.pipeline(transaction=False)
    batch = 500
    for start in range(0, sessions, batch):
        keys: list[str] = []
        args: list[Any] = []
        for i in range(start, min(start + batch, sessions)):
            sid = f"s{i:021d}"
            who = owner or f"user:{i // PER_OWNER}"
            stalled = mixed and i % 50 == 7
            updated = now_ms - (3_600_000 if stalled else (i % 500) * 1000)
            keys += [
                layout.meta(sid),
                layout.messages(sid),
                layout.legacy_messages(sid),
                layout.owner_index(who),
            ]
            args += [who, sid, updated, "1" if mixed and i % 20 == 3 else "2", "1" if stalled else "0"]
        pipe.evalsha(sha, len(keys), *keys, *args, ttl_ms, done, open_, old)
        if len(pipe) >= 20:
            pipe.execute()
    pipe.execute()


_CHILD = """
import json, os, resource, sys, time
sys.path.insert(0, {root!r})
os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"
import django
django.setup()
import redis
from conversations.operations.report import ReportOptions, build_report
from conversations.store import ConversationStore, StoreConfig
store = ConversationStore(redis.Redis(port={port}, socket_timeout=30), StoreConfig(key_prefix={prefix!r}))
started = time.perf_counter()
data = build_report(store, ReportOptions())
wall = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_SELF)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over an exec from the forked parent (the bench, big).
with open("/proc/self/status") as f:
    hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
print(json.dumps({{"wall": wall, "rss_mb": hwm, "cpu": usage.ru_utime + usage.ru_stime, "report": data}}))
"""


def run_scale(sessions: int, progress: Any = print) -> ScaleResult:
    """Fill a private Redis with ``sessions`` sessions, run the report in a child process, measure."""
    proc, port, workdir = start_redis()
    try:
        client = redis.Redis(port=port, socket_timeout=60)
        prefix = "scale"
        layout = KeyLayout(prefix)
        seconds, micros = client.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        progress(f"report at scale: writing {sessions:,} sessions...")
        started = time.perf_counter()
        fill(client, layout, sessions, now_ms, ttl_ms=6 * 3_600_000)
        fill_seconds = time.perf_counter() - started
        # Every call slower than 0.5 ms is logged, and kept: the slowest is there.
        client.config_set("slowlog-log-slower-than", 500)
        client.config_set("slowlog-max-len", _SLOWLOG_KEPT)
        client.slowlog_reset()
        client.config_resetstat()
        cpu_before = client.info("cpu")
        progress("report at scale: running conversations_report...")
        child = subprocess.run(
            [sys.executable, "-c", _CHILD.format(root=str(ROOT), port=port, prefix=prefix)],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        out = json.loads(child.stdout)
        cpu_after = client.info("cpu")
        redis_cpu = sum(float(cpu_after[k]) - float(cpu_before[k]) for k in ("used_cpu_user", "used_cpu_sys"))
        scripts_run = client.info("commandstats").get("cmdstat_evalsha", {})
        slow = client.slowlog_get(_SLOWLOG_KEPT)
        slowest = max((entry["duration"] for entry in slow), default=0) / 1000
        if os.environ.get("SCALE_DEBUG"):
            for entry in sorted(slow, key=lambda e: -e["duration"])[:5]:
                print(entry["duration"], entry["command"][:120], file=sys.stderr)
        report = out["report"]
        return ScaleResult(
            sessions=report["sessions"],
            messages=report["messages"],
            fill_seconds=fill_seconds,
            wall_seconds=out["wall"],
            client_cpu_seconds=out["cpu"],
            redis_cpu_seconds=redis_cpu,
            max_rss_mb=out["rss_mb"],
            longest_call_ms=report["longest_script_call_ms"],
            slowest_redis_ms=slowest,
            mean_script_ms=float(scripts_run.get("usec_per_call", 0)) / 1000,
            slow_calls=len(slow),
            stalled=report["stalled_replies"]["messages"],
            script_calls=report["script_calls"],
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
