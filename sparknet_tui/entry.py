"""The `sparknet` command: with no verb (or only the panel's own options) the control panel, else the engine's CLI.

It sits outside engine/ so that the engine never imports the panel; the engine's CLI is loaded only for a verb.
"""

from __future__ import annotations

import sys

PANEL_OPTIONS = ("--run", "--logs")


def is_panel(argv: list[str]) -> bool:
    """`sparknet`, `sparknet --run RUN`, `sparknet --logs DIR`: what opens the panel."""
    return not argv or argv[0].split("=")[0] in PANEL_OPTIONS


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if is_panel(argv):
        from sparknet_tui.app import main as panel_main

        return panel_main(argv)
    from engine.cli.main import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
