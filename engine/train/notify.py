"""Alerts while you are away: a run finished, failed, stalled, paused for heat or met a loss spike.

Delivery goes through apprise, so one URL per service reaches ntfy, Slack, Discord, email, a webhook and
more (`ntfy://topic`, `json://host:port/path`, `mailto://...`; see apprise's list of services). The
URLs come from SPARKNET_NOTIFY (separated by spaces or commas) or, without it, from `urls = [...]` in
~/.config/sparknet/notify.toml (XDG_CONFIG_HOME moves it); `events = [...]` there picks which events
are sent (all by default). Each alert is sent on a thread of its own: a slow or failed delivery is
logged as a warning and never holds up or stops training.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Callable

EVENTS = ("finished", "failed", "stalled", "thermal_pause", "loss_spike")
DELIVERY_TIMEOUT_S = 10.0


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "sparknet" / "notify.toml"


def load_settings() -> tuple[list[str], tuple[str, ...], str]:
    """(urls, events, where they came from); no URLs means notifications are off."""
    env = os.environ.get("SPARKNET_NOTIFY", "").strip()
    if env:
        return [u for u in re.split(r"[\s,]+", env) if u], EVENTS, "SPARKNET_NOTIFY"
    path = config_path()
    if not path.is_file():
        return [], EVENTS, ""
    from engine import SparkNetError
    from engine.config.loading import read_toml

    data = read_toml(path)
    stray = [k for k in data if k not in ("urls", "events")]
    if stray:  # a misspelt `urls` would otherwise turn alerts off without a word
        raise SparkNetError(f"{path}: unknown key {stray[0]!r}; the file holds urls = [...] and events = [...]")
    urls = data.get("urls", [])
    events = data.get("events", list(EVENTS))
    if not (isinstance(urls, list) and all(isinstance(u, str) for u in urls)):
        raise SparkNetError(f"{path}: urls must be a list of strings, for example urls = [\"ntfy://my-topic\"]")
    if not isinstance(events, list):
        raise SparkNetError(f"{path}: events must be a list, for example events = [\"failed\", \"stalled\"]")
    unknown = [e for e in events if e not in EVENTS]
    if unknown:
        raise SparkNetError(f"{path}: unknown event {unknown[0]!r} in events; choose from {', '.join(EVENTS)}")
    return urls, tuple(events), str(path)


# Services whose URL has a real host name in it; for the rest (slack://TokenA/..., tgram://bot-token/...) the part
# after the scheme is often a secret, so only the scheme is shown.
_HOST_SCHEMES = ("json", "jsons", "xml", "xmls", "form", "forms", "ntfy", "ntfys", "mailto", "mailtos")


def shown(url: str) -> str:
    """A URL without what may be a secret, for messages."""
    m = re.match(r"([a-z0-9+]+)://(?:[^@/]*@)?([^/?#]*)", url, re.I)
    if not m:
        return url.split(":", 1)[0]
    scheme = m.group(1).lower()
    return f"{scheme}://{m.group(2)}" if scheme in _HOST_SCHEMES else f"{scheme}://…"


def check_settings() -> str:
    """Before a run starts: the settings load and apprise understands every URL, as the run's deliveries will ask;
    where alerts will go, for the ready line ("" when notifications are off)."""
    from engine import SparkNetError

    urls, events, origin = load_settings()
    if not urls:
        return ""
    import apprise  # half a second to import: only where there is a URL to ask it of

    for url in urls:
        if not apprise.Apprise().add(url):
            raise SparkNetError(f"{origin}: notification URL {shown(url)} is not one apprise understands; fix it "
                                "(https://github.com/caronc/apprise/wiki lists the services) or remove it")
    if not events:
        return f"no alerts ({origin} chooses no events)"
    chosen = "" if set(events) == set(EVENTS) else f" of {', '.join(events)}"
    return f"alerts{chosen} to {', '.join(shown(u) for u in urls)}"


class Notifier:
    """Sends alerts for one run; warn(message) hears of each delivery that failed."""

    def __init__(self, run_id: str, urls: list[str], events: tuple[str, ...], warn: Callable[[str], None]):
        self.run_id = run_id
        self.urls = urls
        self.events = events
        self.warn = warn
        self._threads: list[threading.Thread] = []

    @classmethod
    def from_settings(cls, run_id: str, warn: Callable[[str], None]) -> "Notifier":
        try:
            urls, events, _ = load_settings()
        except Exception as e:  # a bad config file must not stop a run
            warn(f"notifications off: {e}")
            urls, events = [], EVENTS
        return cls(run_id, urls, events, warn)

    def send(self, event: str, message: str) -> None:
        if event not in self.events or not self.urls:
            return
        t = threading.Thread(target=self._deliver, args=(event, message), daemon=True, name="sparknet-notify")
        t.start()
        self._threads = [x for x in self._threads if x.is_alive()] + [t]

    def _deliver(self, event: str, message: str) -> None:
        try:
            import apprise

            for url in self.urls:
                ap = apprise.Apprise()
                if not ap.add(url):
                    self.warn(f"notification URL {shown(url)} is not one apprise understands; fix SPARKNET_NOTIFY "
                              f"or {config_path()}")
                    continue
                ok = ap.notify(title=f"SparkNet {self.run_id}: {event.replace('_', ' ')}", body=message)
                if not ok:
                    self.warn(f"could not deliver the '{event}' notification to {shown(url)}")
        except Exception as e:  # never let an alert disturb training
            self.warn(f"could not deliver the '{event}' notification: {e.__class__.__name__}: {e}")

    def close(self, timeout: float = DELIVERY_TIMEOUT_S) -> None:
        """Give alerts still on their way a moment to arrive before the process ends."""
        for t in self._threads:
            t.join(timeout)
