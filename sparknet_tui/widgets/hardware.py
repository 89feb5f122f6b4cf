"""The hardware panel: per-GPU temperature, power, utilization, clock, memory, throttling; CPU and RAM."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

from engine.formatting import NA, fmt_bytes, fmt_percent, is_number
from sparknet_tui.watch import GpuView, RunView
from sparknet_tui.widgets.chart import spark

SPARK_WIDTH = 10


def fmt_throttle(value: Any) -> str:
    if value is None:
        return NA
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else "none"
    if isinstance(value, dict):
        active = [str(k) for k, v in value.items() if v]
        return ", ".join(active) if active else "none"
    if isinstance(value, bool):
        return "yes" if value else "none"
    if isinstance(value, int):
        return "none" if value == 0 else f"0x{value:x}"
    return str(value) or "none"


def fmt_gpu_memory(gpu: GpuView) -> str:
    """Never a percentage against a total the driver did not give (unified memory has none)."""
    used, total = gpu.mem_used_b, gpu.mem_total_b
    if total is not None and total > 0:
        return f"{fmt_bytes(used)} / {fmt_bytes(total)}" + (f" ({used / total:.0%})" if used is not None else "")
    label = "unified memory" if gpu.unified_memory else "total N/A"
    return f"{fmt_bytes(used)} used ({label})" if used is not None else f"{NA} ({label})"


def gpu_lines(gpu: GpuView, warn_c: float) -> Text:
    """Five short lines per GPU, narrow enough for a side column."""
    hot = gpu.temp_c is not None and gpu.temp_c > warn_c
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"GPU{gpu.index} ", style="bold")
    text.append(gpu.name)
    if hot:
        text.append(f"  ⚠ above {warn_c:.0f}°C", style="bold red")
    text.append("\n temp  ")
    text.append(f"{f'{gpu.temp_c:.0f}°C' if gpu.temp_c is not None else NA:>5}",
                style="bold red reverse" if hot else "bold")
    text.append(f" {spark(gpu.temp_history, SPARK_WIDTH):<{SPARK_WIDTH}}", style="red" if hot else "green")
    text.append("  SM ")
    text.append(f"{gpu.sm_clock_mhz:.0f} MHz" if gpu.sm_clock_mhz is not None else NA, style="bold")
    text.append("\n power ")
    text.append(f"{f'{gpu.power_w:.0f} W' if gpu.power_w is not None else NA:>5}", style="bold")
    text.append(f" {spark(gpu.power_history, SPARK_WIDTH):<{SPARK_WIDTH}}", style="yellow")
    text.append("  throttle ")
    throttle = fmt_throttle(gpu.throttle)
    text.append(throttle, style="bold yellow" if throttle not in ("none", NA) else "bold")
    text.append("\n util  ")
    text.append(f"{fmt_percent(gpu.util_pct):>5}", style="bold")
    text.append(f" {spark(gpu.util_history, SPARK_WIDTH)}", style="cyan")
    text.append("\n mem   ")
    text.append(fmt_gpu_memory(gpu), style="bold")
    return text


def host_line(view: RunView) -> Text:
    """CPU and RAM on a line each, narrow enough for the side column."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("CPU ")
    text.append(fmt_percent(view.cpu_pct), style="bold")
    text.append(f" {spark(view.cpu_history, SPARK_WIDTH):<{SPARK_WIDTH}}", style="cyan")
    text.append("\nRAM ")
    if view.ram_used_b is not None and view.ram_total_b:
        gib = 1024**3
        text.append(f"{view.ram_used_b / gib:.1f}/{view.ram_total_b / gib:.1f} GiB", style="bold")
    else:
        text.append(fmt_bytes(view.ram_used_b), style="bold")
    text.append(f" {spark(view.ram_history, SPARK_WIDTH)}", style="magenta")
    return text


def memory_line(view: RunView) -> str:
    """The run's own memory, what the machine has left, and the floor below which the run stops itself."""
    floor = view.status.number("memory_floor_b")
    floor_text = (f"memory floor {NA}" if not is_number(floor) else "off" if floor <= 0
                  else f"stops below {fmt_bytes(floor)}")
    return f"RAM of the run {fmt_bytes(view.run_rss_b)} · free {fmt_bytes(view.ram_available_b)} · {floor_text}"


def hardware_text(view: RunView) -> Text:
    parts = [gpu_lines(g, view.warn_c) for g in view.gpus]
    if view.state in ("finished", "failed", "stopped") and (view.gpus or view.cpu_pct is not None):
        # what the sampler saw last, not what the machine does now
        parts.insert(0, Text(f"last readings (run {view.state})", style="dim"))
    if not view.gpus:
        parts.append(Text("No GPU reported (CPU run or no NVML)", style="dim"))
    parts.append(host_line(view))
    return Text("\n").join(parts)


class HardwarePanel(Static):
    DEFAULT_CSS = """
    HardwarePanel { height: auto; }
    """

    def show(self, view: RunView) -> None:
        self.update(hardware_text(view))
