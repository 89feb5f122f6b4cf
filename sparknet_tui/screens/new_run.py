"""New run: pick a saved profile and mix, edit them with the engine's validation as you type, start."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.widgets import Footer, Header, Input, Label, Select, Static

from engine.config.ceilings import read_ceilings
from engine.config.loading import RECOMMENDED_PROFILE, ConfigError, list_mixes, list_profiles
from engine.formatting import fmt_count, fmt_duration, fmt_int, fmt_steps
from engine.runs.rundir import run_name_part, sharing_warning
from sparknet_tui.commands import CliResult, check_run_inputs
from sparknet_tui.context import PanelContext
from sparknet_tui.messages import CeilingsRead, RunInputsChecked, RunsScanned, StartRun
from sparknet_tui.plan import (
    MAIN_FIELDS,
    MixSource,
    Plan,
    ProfileSource,
    load_mix_source,
    load_profile_source,
    make_plan,
    save_mix,
    save_profile,
)
from sparknet_tui.scan import RunRow, RunsScanner
from sparknet_tui.screens.common import PanelScreen

# Where the NVIDIA driver lists this machine's GPUs (Linux, the DGX Spark included): read without loading CUDA.
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")
CPU_PROFILE = "tiny-cpu"  # what trains in seconds where there is no GPU


def default_profile(profiles: list[str]) -> str | None:
    """The profile New run opens with: the recommended one on a machine with an NVIDIA GPU, else the CPU one."""
    has_gpu = NVIDIA_GPUS.is_dir() and any(NVIDIA_GPUS.iterdir())
    for name in (RECOMMENDED_PROFILE, CPU_PROFILE) if has_gpu else (CPU_PROFILE, RECOMMENDED_PROFILE):
        if name in profiles:
            return name
    return profiles[0] if profiles else None


def field_id(key: str) -> str:
    return "f-" + key.replace(".", "-")


def plan_summary(plan: Plan) -> Text:
    """The plan's headline beside 'valid', where an 80x24 terminal shows it without scrolling."""
    text = Text(f" · {fmt_steps(plan.steps)} · {fmt_count(plan.total_tokens)} "
                "tokens", style="dim")
    if plan.duration_s is not None:
        text.append(f" · ≈ {fmt_duration(plan.duration_s)}", style="bold")
    return text


def derived_text(plan: Plan) -> Text:
    text = Text()
    if plan.profile is None or plan.mix is None:
        text.append("The figures appear when the profile and mix are valid.", style="dim")
        return text
    p = plan.profile
    rows = [
        ("parameters", fmt_int(plan.parameters)),
        ("FLOPs/token", fmt_count(plan.flops_per_token)),
        ("tokens/step", fmt_int(plan.tokens_per_step)),
        ("steps", fmt_int(plan.steps) + f" (warm-up {fmt_int(p.warmup_steps)})"),
        ("tokens", fmt_int(plan.total_tokens)),
    ]
    for label, value in rows:
        text.append(f"{label:<12}", style="dim")
        text.append(value + "\n", style="bold")
    text.append(f"{'duration':<12}", style="dim")
    if plan.duration_s is not None and plan.projected_on:
        text.append(f"≈ {fmt_duration(plan.duration_s)}", style="bold yellow")
        text.append(f" at {fmt_count(plan.throughput)} tok/s (projected from the ceilings `sparknet doctor` "
                    f"measured on the {plan.projected_on}; no finished run of this shape yet)\n", style="dim")
    elif plan.duration_s is not None and plan.throughput:
        text.append(f"≈ {fmt_duration(plan.duration_s)}", style="bold green")
        runs = "run" if plan.throughput_runs == 1 else "runs"
        text.append(f" at {fmt_count(plan.throughput)} tok/s (median of {plan.throughput_runs} finished {runs} "
                    "of this shape here)\n", style="dim")
    else:
        text.append("unknown", style="bold yellow")
        text.append(" (no finished run of this model shape on this machine yet)\n", style="dim")
    text.append(f"mix {plan.mix.name}", style="bold")
    text.append(f" ({len(plan.per_source)} sources)\n", style="dim")
    for name, share, tokens in plan.per_source:
        text.append(f"  {name:<14.14} {share:6.1%} {fmt_count(tokens):>7} tokens\n")
    if plan.overrides:
        text.append("--set " + " ".join(plan.overrides) + "\n", style="cyan")
    if plan.weights_changed:
        text.append("mix weights edited: save the mix (ctrl+o) to start with it\n", style="yellow")
    text.rstrip()
    return text


class NewRunScreen(PanelScreen):
    SUB_TITLE = "New run"
    HELP_TOPIC = "new run"

    BINDINGS = [
        Binding("escape", "app.back", "Back"),
        Binding("ctrl+r", "start", "Start run"),
        Binding("ctrl+s", "save_profile", "Save profile"),
        Binding("ctrl+o", "save_mix", "Save mix"),
    ]

    def __init__(self, context: PanelContext, profile: str | None = None) -> None:
        super().__init__(context)
        profiles = list_profiles()
        self.initial_profile = profile if profile in profiles else default_profile(profiles)
        self.source: ProfileSource | None = None
        self.mix_source: MixSource | None = None
        self.profile_error: str | None = None
        self.mix_error: str | None = None
        self.plan = Plan()
        self.runs: list[RunRow] = []
        self.ceilings: dict = {}  # what `sparknet doctor` measured on this machine, for the time estimate
        self.weight_inputs: dict[str, Input] = {}  # source name -> its weight field
        # what `sparknet train --check` said, for which (profile, mix, overrides); None while it runs
        self.checked: tuple[tuple, CliResult | None] | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="new-body"):
            with Horizontal(id="new-pick"):
                yield Label("profile", classes="pick-label")
                yield Select([(p, p) for p in list_profiles()], id="profile-select",
                             allow_blank=not self.initial_profile,
                             prompt="profile", value=self.initial_profile or Select.NULL,
                             compact=True)
                yield Label("mix", classes="pick-label")
                yield Select([(m, m) for m in list_mixes()], id="mix-select", allow_blank=True, prompt="mix",
                             compact=True)
            yield Static(id="new-description")
            with Horizontal(id="new-columns"):
                with Vertical(id="new-form"):
                    yield Static("hyperparameters", classes="section")
                    with Grid(id="fields"):
                        for key, label in MAIN_FIELDS:
                            yield Label(label, classes="field-label")
                            yield Input(id=field_id(key), classes="field", compact=True, tooltip=key)
                    yield Static("mix weights", classes="section")
                    yield Grid(id="weights")
                    with Grid(id="names"):
                        yield Label("run name", classes="field-label")
                        yield Input(id="run-name", placeholder="optional", compact=True, classes="field")
                        yield Label("save profile as", classes="field-label")
                        yield Input(id="save-profile-name", placeholder="new name", compact=True, classes="field")
                        yield Label("save mix as", classes="field-label")
                        yield Input(id="save-mix-name", placeholder="new name", compact=True, classes="field")
                with Vertical(id="new-derived"):
                    yield Static(id="derived")
        yield Static(id="new-error")  # outside the scroll: in view whatever field has focus
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        # keys start on the profile; Tab then walks mix, the fields in order, weights and names
        self.query_one("#profile-select", Select).focus()
        self.scan_runs()
        if self.initial_profile:
            self.load_profile(self.initial_profile)
        else:
            self.profile_error = "no profiles found: add one to profiles/ (see docs/panel.md)"
            self.recompute()

    def scan_runs(self) -> None:
        self.in_thread("scan", lambda: RunsScanned(RunsScanner().scan()))
        self.in_thread("ceilings", lambda: CeilingsRead(read_ceilings()))

    def on_runs_scanned(self, message: RunsScanned) -> None:
        self.runs = message.result.rows
        self.recompute()

    def on_ceilings_read(self, message: CeilingsRead) -> None:
        self.ceilings = message.saved
        self.recompute()

    # ------------------------------------------------------------ loading a profile and mix

    def load_profile(self, name: str) -> None:
        """Load a saved profile into the form, then its own mix (or keep the chosen one if it has none)."""
        fields = self.form_fields()
        try:
            self.source, self.profile_error = load_profile_source(name), None
        except ConfigError as e:
            self.source, self.profile_error = None, str(e)
        with self.prevent(Input.Changed):
            values = self.source.field_defaults() if self.source is not None else fields
            for key, value in values.items():
                self.query_one(f"#{field_id(key)}", Input).value = value
        mix = self.source.profile.mix if self.source and self.source.profile.mix in list_mixes() else None
        if mix is None:
            chosen = self.query_one("#mix-select", Select).value
            mix = str(chosen) if chosen is not Select.NULL else None
        if mix is not None:
            self.load_mix(mix)
        else:
            wanted = self.source.profile.mix if self.source else ""
            self.mix_source = None
            self.mix_error = (f"mix '{wanted}' named by the profile is not in profiles/mixes; pick a mix" if wanted
                              else "pick a mix")
            self.build_weights()
            self.recompute()

    def load_mix(self, name: str) -> None:
        try:
            self.mix_source, self.mix_error = load_mix_source(name), None
        except ConfigError as e:
            self.mix_source, self.mix_error = None, str(e)
        with self.prevent(Select.Changed):
            self.query_one("#mix-select", Select).value = name if name in list_mixes() else Select.NULL
        self.build_weights()
        self.recompute()

    def build_weights(self) -> None:
        grid = self.query_one("#weights", Grid)
        grid.remove_children()
        defaults = self.mix_source.weight_defaults() if self.mix_source else {}
        self.weight_inputs = {name: Input(weight, compact=True, classes="field weight", tooltip=f"weight of {name}")
                              for name, weight in defaults.items()}
        widgets = []
        for name, field in self.weight_inputs.items():
            widgets += [Label(name, classes="field-label"), field]
        if widgets:
            grid.mount_all(widgets)

    @on(Select.Changed, "#profile-select")
    def _profile_changed(self, event: Select.Changed) -> None:
        if event.value is not Select.NULL and (self.source is None or self.source.name != event.value):
            self.load_profile(str(event.value))

    @on(Select.Changed, "#mix-select")
    def _mix_changed(self, event: Select.Changed) -> None:
        if event.value is not Select.NULL and (self.mix_source is None or self.mix_source.name != event.value):
            self.load_mix(str(event.value))

    @on(Input.Changed, ".field")
    def _field_changed(self, event: Input.Changed) -> None:
        if event.input.id == "run-name":
            self.show()  # the name changes only the run's id, which the summary line shows
        else:
            self.recompute()

    # ------------------------------------------------------------ validation and figures

    def form_fields(self) -> dict[str, str]:
        return {key: self.query_one(f"#{field_id(key)}", Input).value for key, _ in MAIN_FIELDS}

    def form_weights(self) -> dict[str, str]:
        return {name: field.value for name, field in self.weight_inputs.items()}

    def recompute(self) -> None:
        if self.source is None or self.mix_source is None:
            self.plan = Plan(error=self.profile_error or self.mix_error or "pick a profile and a mix")
        else:
            self.plan = make_plan(self.source, self.mix_source, self.form_fields(), self.form_weights(), self.runs,
                                  self.ceilings)
        for key, _ in MAIN_FIELDS:
            self.query_one(f"#{field_id(key)}", Input).set_class(self.plan.error_field == key, "-invalid")
        for name, field in self.weight_inputs.items():
            field.set_class(self.plan.error_field == f"weight:{name}", "-invalid")
        self.check_inputs()
        self.show()

    def inputs_key(self) -> tuple | None:
        if self.source is None or self.mix_source is None or not self.plan.ok or self.plan.weights_changed:
            return None
        return (self.source.name, self.mix_source.name, tuple(self.plan.overrides))

    def check_inputs(self) -> None:
        """What the form cannot see (sources on disk, the tokenizer, the vocabulary) is checked by the engine."""
        key = self.inputs_key()
        if key is None or (self.checked is not None and self.checked[0] == key):
            return
        self.checked = (key, None)
        self.in_thread("check", lambda: RunInputsChecked(key, check_run_inputs(key[0], key[1], list(key[2]))))

    def on_run_inputs_checked(self, message: RunInputsChecked) -> None:
        if self.checked is not None and self.checked[0] == message.key:
            self.checked = (message.key, message.result)
            self.show()
        else:  # the form changed while the check ran: check what it says now
            self.checked = None
            self.check_inputs()

    def check_problem(self) -> str | None:
        """None when the engine said ready; the reason otherwise (or that it is still checking)."""
        if self.checked is None or self.checked[0] != self.inputs_key():
            return "checking the mix's sources and tokenizer…"
        result = self.checked[1]
        if result is None:
            return "checking the mix's sources and tokenizer…"
        return None if result.ok else result.message.removeprefix("sparknet train: error: ")

    def show(self) -> None:
        description = Text()
        if self.source is not None:
            description.append(self.source.profile.description or self.source.name, style="bold")
            if self.source.profile.measured:
                description.append(f"\nmeasured: {self.source.profile.measured}", style="green")
        if self.mix_source is not None:
            description.append("\n" + (self.mix_source.mix.description or self.mix_source.name), style="dim")
        self.query_one("#new-description", Static).update(description)
        self.query_one("#derived", Static).update(derived_text(self.plan))
        error = self.plan.error
        problem = None if error or self.plan.weights_changed else self.check_problem()
        if error:
            line = Text(error, style="bold red")
        elif self.plan.weights_changed:
            line = Text("mix weights edited: save the mix (ctrl+o) to start with them", style="yellow")
        elif problem and problem.startswith("checking"):
            line = Text(problem, style="yellow")
        elif problem:
            line = Text(problem, style="bold red")
        else:
            line = Text("valid: ctrl+r starts the run", style="green")
            line.append_text(plan_summary(self.plan))
            typed = self.query_one("#run-name", Input).value.strip()
            if typed and run_name_part(typed) != typed:
                line.append(f" · named {run_name_part(typed)}", style="dim")
            line.append(f"\n{self.checked[1].message.removeprefix('ready: ')}", style="dim")  # the memory it needs
        live = [r.run_id for r in self.runs if r.live]
        if live:
            line.append(f"\n⚠ {sharing_warning(live)}", style="bold yellow")
        self.query_one("#new-error", Static).update(line)

    # ------------------------------------------------------------ actions

    def action_start(self) -> None:
        if self.source is None or self.mix_source is None or not self.plan.ok:
            self.notify(self.plan.error or "pick a profile and a mix", severity="error")
            return
        if self.plan.weights_changed:
            self.notify("Mix weights were edited: save the mix first (ctrl+o), then start", severity="warning")
            return
        problem = self.check_problem()
        if problem and not problem.startswith("checking"):  # while checking, the command checks again itself
            self.notify(problem, severity="error")
            return
        name = self.query_one("#run-name", Input).value.strip() or None
        self.post_message(StartRun(self.source.name, self.mix_source.name, self.plan.overrides, name))

    def action_save_profile(self) -> None:
        if self.source is None or self.mix_source is None:
            self.notify(self.plan.error or "pick a profile and a mix", severity="error")
            return
        try:
            path = save_profile(self.plan, self.query_one("#save-profile-name", Input).value, self.mix_source.name)
        except ConfigError as e:
            self.notify(str(e), severity="error")
            return
        self.notify(f"saved {path}")
        self.query_one("#save-profile-name", Input).value = ""
        self.refresh_choices()
        with self.prevent(Select.Changed):
            self.query_one("#profile-select", Select).value = path.stem
        self.load_profile(path.stem)

    def action_save_mix(self) -> None:
        if self.source is None or self.mix_source is None:
            self.notify(self.plan.error or "pick a profile and a mix", severity="error")
            return
        try:
            path = save_mix(self.plan, self.query_one("#save-mix-name", Input).value, self.mix_source.path)
        except ConfigError as e:
            self.notify(str(e), severity="error")
            return
        self.notify(f"saved {path}")
        self.query_one("#save-mix-name", Input).value = ""
        self.refresh_choices()
        self.load_mix(path.stem)  # the edited hyperparameters stay as typed

    def refresh_choices(self) -> None:
        with self.prevent(Select.Changed):
            self.query_one("#profile-select", Select).set_options([(p, p) for p in list_profiles()])
            self.query_one("#mix-select", Select).set_options([(m, m) for m in list_mixes()])
        if self.source is not None:
            with self.prevent(Select.Changed):
                self.query_one("#profile-select", Select).value = self.source.name
        if self.mix_source is not None:
            with self.prevent(Select.Changed):
                self.query_one("#mix-select", Select).value = self.mix_source.name
