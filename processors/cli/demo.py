"""outbound-gate demo (`make run`): a worker, a sample through the real broker, what came out."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from processors.cli.common import kafka_ready, settings_for
from processors.core.policy.templates import catalog_key
from processors.settings import Settings
from processors.tools import sample

if TYPE_CHECKING:
    from processors.tools.kafka_io import Output


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="start a worker, publish a sample, show the decisions, keep running",
        description=(
            "Start a worker, publish a small sample (a template catalog and a few dozen messages "
            "that exercise the rules) to KAFKA_BOOTSTRAP_SERVERS with kafka-python, print what "
            "came out on the accepted, rejected and dead-letter topics, then keep the worker "
            "running until Ctrl-C."
        ),
    )
    parser.add_argument("--web-port", type=int, default=None,
                        help=f"worker HTTP port ({Settings().web_port})")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for the worker and its decisions (120)")
    parser.add_argument("--no-wait", action="store_true",
                        help="stop the worker after showing the decisions")
    parser.set_defaults(run=run)


def _get(url: str, parse: Callable[[bytes], Any]) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, parse(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, parse(exc.read() or b"null")


def state_events_applied(body: bytes) -> float:
    """Sum of outbound_gate_state_events_total in a /metrics scrape."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines()
               if line.startswith("outbound_gate_state_events_total"))


def wait_http(url: str, done: Any, timeout: float, what: str, proc: subprocess.Popen[bytes],
              parse: Callable[[bytes], Any] = json.loads) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited with {proc.returncode} while waiting for {what}")
        try:
            status, body = _get(url, parse)
            if done(status, body):
                return body
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} ({url})")
        time.sleep(0.25)  # pacing of an HTTP poll loop with a deadline, not a synchronisation


def _row(label: str, output: Output | None) -> str:
    if output is None:
        return f"  {label:<40} (no decision)"
    value = output.value
    enrichment = value.get("enrichment", {})
    region = enrichment.get("recipient_region") or "-"
    where = f"{region}/{enrichment.get('template_category') or '-'}"
    if output.topic.endswith("rejected"):
        meta = value.get("meta_error_code")
        return (f"  {label:<40} REJECTED {value['error_code']}"
                f"{f' (Meta {meta})' if meta else ''}  [{where}]")
    return f"  {label:<40} accepted  [{where}]"


def run(args: argparse.Namespace) -> int:
    from processors.tools.kafka_io import OutputReader, producer, send_json  # Kafka only when used

    settings = settings_for("demo")
    if settings is None or not kafka_ready("demo", settings):
        return 2
    port = args.web_port or settings.web_port
    topics = settings.topics
    # Warnings only from the worker by default, so that the decisions stay readable.
    env = {"OUTBOUND_GATE_LOG_LEVEL": "warning", **os.environ, "OUTBOUND_GATE_WEB_PORT": str(port)}
    log_path = Path(settings.data_dir) / "demo-worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"starting a worker against {settings.bootstrap_servers} (HTTP on 127.0.0.1:{port}, "
          f"log in {log_path})")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "processors.cli.main", "worker"],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/readyz", lambda s, b: s == 200, args.timeout,
                  "the worker to be assigned its partitions", proc)
        now = time.time()
        run_id = time.strftime("%H%M%S", time.gmtime(now))
        entries = sample.catalog(now)
        messages = sample.messages(now, run_id)
        reader = OutputReader(settings.bootstrap_servers,
                              [topics.accepted, topics.rejected, topics.dlq], settings.security)
        out = producer(settings.bootstrap_servers, settings.security)
        for entry in entries:
            send_json(out, topics.templates,
                      catalog_key(entry["tenant_id"], entry["name"], entry["language"]), entry)
        out.flush()
        last = entries[-1]
        last_key = catalog_key(last["tenant_id"], last["name"], last["language"])
        wait_http(f"{base}/catalog/{last_key}",
                  lambda s, b: s == 200 and b["entry"]["updated_at"] == last["updated_at"],
                  args.timeout, "the worker to load the sample catalog", proc)
        events = sample.state_events(now)
        for field, recipient, value in events:
            send_json(out, getattr(topics, field), recipient, value)
        out.flush()
        wait_http(f"{base}/metrics", lambda s, b: s == 200 and b >= len(events), args.timeout,
                  "the worker to apply the sample's state events", proc,
                  parse=state_events_applied)
        print(f"published {len(entries)} catalog entries and {len(events)} state events; "
              f"publishing {len(messages)} messages and {len(sample.MALFORMED)} malformed events")
        for _, message in messages:
            send_json(out, topics.outbound, message["recipient"], message)
        for raw in sample.MALFORMED:
            out.send(topics.outbound, key=b"malformed", value=raw)
        out.flush()
        out.close()
        ids = {m["message_id"] for _, m in messages}
        reader.wait_for(
            lambda seen: ids <= {o.value.get("message_id") for o in seen}
            and sum(o.topic == topics.dlq for o in seen) >= len(sample.MALFORMED),
            args.timeout, "a decision for every sample message")
        by_id = {o.value.get("message_id"): o for o in reader.seen if o.topic != topics.dlq}
        print(f"\ndecisions (tenant {sample.TENANT}), read back from {topics.accepted} and "
              f"{topics.rejected}:")
        for label, message in messages:
            print(_row(label, by_id.get(message["message_id"])))
        letters = [o for o in reader.seen if o.topic == topics.dlq]
        print(f"\ndead letters on {topics.dlq}:")
        for letter in letters:
            print(f"  offset {letter.value['offset']}: {letter.value['reason']}: "
                  f"{letter.value['error'][:90]}")
        reader.close()
        accepted = sum(o.topic == topics.accepted for o in reader.seen)
        print(f"\n{accepted} accepted, {len(ids) - accepted} rejected, {len(letters)} dead letters")
        if args.no_wait:
            return 0
        print(f"\nthe worker keeps running (HTTP {base}/readyz, {base}/metrics; log in "
              f"{log_path}); Ctrl-C stops it")
        proc.wait()
        return proc.returncode or 0
    except KeyboardInterrupt:
        return 0
    except (TimeoutError, RuntimeError) as exc:
        print(f"outbound-gate demo: {exc}", file=sys.stderr)
        return 1
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        print("worker stopped")
