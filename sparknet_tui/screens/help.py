"""Help: what the current screen's keys do and what its words mean. `?` or F1 opens it, Escape closes it."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

STATES = (
    ("preparing", "reading and tokenizing the mix, or compiling, before the first step"),
    ("running", "training; its lock is held by a live process"),
    ("stopping", "asked to stop: it saves a checkpoint, then ends"),
    ("stalled", "live, but no progress for much longer than usual; the log may say why"),
    ("paused", "the thermal guard paused it until the GPU cools (it resumes by itself)"),
    ("stopped", "stopped by you; r resumes it from its newest checkpoint"),
    ("finished", "trained all its tokens and saved its model"),
    ("failed", "ended with an error, or its process died without saying so; r resumes it"),
)

WORDS = {
    "runs": (
        ("progress", "tokens trained of the run's total (steps where tokens are not known)"),
        ("loss", "the newest training loss (cross-entropy, nats per token)"),
        ("val ppl", "validation perplexity: exp of the loss on held-out text of the mix"),
        ("ETA", "time left at the run's recent speed"),
        ("tok/s", "training tokens per second, the newest reading"),
        ("GPU °C", "the hottest GPU's temperature; ⚠ above the profile's thermal.warn_c"),
        ("mark", "m marks up to two runs (◆); c compares them side by side"),
        ("columns", "a narrow terminal shows the columns that fit; the line under the table gives the rest"),
    ),
    "live": (
        ("loss", "training loss per logged step; smoothed with an average that a single spike cannot pull"),
        ("val loss", "loss on held-out text of the mix (dots); val ppl is its exp"),
        ("reference", "codelion-70m's loss on the default mix, for runs of that profile: far above it is "
                      "not learning"),
        ("zoom", "z shows the recent part of the run with its own y range; x puts steps on a log scale"),
        ("MFU", "model FLOPs per second as a share of the GPU's datasheet peak"),
        ("hardware", "N/A is a value the hardware does not report, never a zero"),
    ),
    "evaluation": (
        ("measured", "computed here, on this machine"),
        ("published", "reported by the model's authors or earlier runs, not re-measured"),
        ("perplexity", "exp of the mean loss per token; only runs with the same tokenizer compare"),
        ("bits/byte", "loss per byte of raw text: compares across tokenizers"),
    ),
    "new run": (
        ("valid", "the engine's own checks passed, `sparknet train --check` included; ctrl+r starts it"),
        ("memory", "the run's estimated peak memory against what the device has free"),
        ("duration", "from the speed of finished runs of the same shape on this machine, or unknown"),
    ),
    "sweeps": (
        ("sweep", "short runs of several variants of one recipe, one after another (`sparknet sweep SPEC`)"),
        ("rank", "by the sweep's metric, lowest first; failed, diverged and unfinished variants come last"),
        ("±", "over a variant's seeds: the mean, ± half their range"),
        ("spike", "the largest rise of the training loss above its lowest value so far, after warm-up"),
        ("curves", "training loss against tokens seen; m picks the variants drawn (the best three at first)"),
        ("save", "a variant becomes a profile that remembers its sweep and rank (New run shows it)"),
    ),
    "compare": (
        ("A, B", "the two marked runs, in the order marked"),
        ("settings", "every profile and mix setting that differs, as key: A → B; sources by name"),
    ),
}


def keys_text(screen: Screen) -> Text:
    """The keys active on `screen`, from its bindings, so the list never disagrees with the footer."""
    text = Text()
    text.append("keys\n", style="bold")
    # the panel's own keys; Textual's (tab, copy, a focused widget's cursor keys) are those of every terminal app
    ours = {b.action for cls in type(screen).__mro__ if cls.__module__.startswith("sparknet_tui.")
            for b in cls.__dict__.get("BINDINGS", []) if isinstance(b, Binding)}
    seen = set()
    for active in screen.active_bindings.values():
        binding = active.binding
        if binding.action not in ours or not binding.description or binding.action in seen:
            continue
        seen.add(binding.action)
        shown = binding.key_display or screen.app.get_key_display(binding)
        text.append(f"  {shown:<8}", style="bold cyan")
        text.append(f"{binding.tooltip or binding.description}\n")
    return text


def help_text(screen: Screen) -> Text:
    name = str(getattr(screen, "HELP_TOPIC", "runs"))
    text = Text()
    text.append(f"SparkNet · {name} screen\n\n", style="bold")
    text.append_text(keys_text(screen))
    text.append("  ^p      every action by name (the command palette)\n")
    text.append("  ^q      quit from anywhere\n\n")
    text.append("what the words mean\n", style="bold")
    for word, meaning in WORDS.get(name, ()):
        text.append(f"  {word:<11}", style="bold")
        text.append(f"{meaning}\n")
    if name in ("runs", "live"):
        text.append("\nstates\n", style="bold")
        for state, meaning in STATES:
            text.append(f"  {state:<11}", style="bold")
            text.append(f"{meaning}\n")
    text.append("\nEscape closes this help. The manual is docs/panel.md.", style="dim")
    return text


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,f1,q", "close", "Close help")]

    def __init__(self, about: Screen) -> None:
        super().__init__()
        self.about = about

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(help_text(self.about), id="help-text")

    def action_close(self) -> None:
        self.dismiss(None)
