"""Notifications through apprise, received by a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cli_helpers import FAST, events, only_run, sparknet

from engine import SparkNetError
from engine.train.notify import Notifier, load_settings, shown


@pytest.fixture
def receiver():
    """An HTTP server on 127.0.0.1 that keeps every JSON body POSTed to it."""
    bodies: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            bodies.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"json://127.0.0.1:{server.server_address[1]}/hook", bodies
    server.shutdown()
    server.server_close()


def closed_port_url() -> str:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        return f"json://127.0.0.1:{s.getsockname()[1]}/hook"


@pytest.mark.slow
def test_a_finished_run_notifies_and_a_failed_delivery_is_only_a_warning(logs, receiver, monkeypatch):
    url, bodies = receiver
    dead = closed_port_url()
    monkeypatch.setenv("SPARKNET_NOTIFY", f"{url}, {dead}")
    sparknet("train", "--profile", "tiny-cpu", *FAST, "--set", "run.tokens=4096")
    run = only_run(logs)
    assert [b["title"] for b in bodies] == [f"SparkNet {run.name}: finished"]
    assert "final loss" in bodies[0]["message"]
    warnings = [e["message"] for e in events(run) if e["event"] == "warning"]
    assert any(f"could not deliver the 'finished' notification to {shown(dead)}" in w for w in warnings), warnings
    assert events(run)[-1]["event"] == "finished" or any(e["event"] == "finished" for e in events(run))


def test_alerts_go_out_on_their_own_thread_and_only_for_chosen_events(receiver):
    url, bodies = receiver
    warned = []
    notifier = Notifier("run-1", [url], ("stalled",), warned.append)
    notifier.send("finished", "not chosen")
    notifier.send("stalled", "no progress for 600 s")
    notifier.close()
    assert [b["title"] for b in bodies] == ["SparkNet run-1: stalled"] and warned == []


def test_settings_from_the_user_config_file(tmp_path, monkeypatch):
    monkeypatch.delenv("SPARKNET_NOTIFY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert load_settings()[0] == []  # no file: notifications off
    (tmp_path / "sparknet").mkdir()
    (tmp_path / "sparknet" / "notify.toml").write_text('urls = ["ntfy://my-topic"]\nevents = ["failed", "stalled"]\n')
    urls, chosen, where = load_settings()
    assert urls == ["ntfy://my-topic"] and chosen == ("failed", "stalled") and where.endswith("notify.toml")
    for body, says in (('urls = ["ntfy://t"]\nevents = ["sometimes"]\n', "unknown event 'sometimes'"),
                       ('urls = ["ntfy://t"]\nevents = "failed"\n', "events must be a list"),
                       ('url = ["ntfy://t"]\n', "unknown key 'url'")):  # a misspelling never turns alerts off
        (tmp_path / "sparknet" / "notify.toml").write_text(body)
        with pytest.raises(SparkNetError, match=says):
            load_settings()
    assert shown("slack://TokenA/TokenB/TokenC") == "slack://…"
    assert shown("mailto://user:secret@example.com") == "mailto://example.com"
