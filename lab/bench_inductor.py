"""`sparknet bench` with some of torch.compile's inductor options changed, to measure whether one would pay.

    python lab/bench_inductor.py combo_kernels=1,aggressive_fusion=1 --profile modern-70m --mix standin.toml --steps 40
    python lab/bench_inductor.py "" --profile modern-70m --mix standin.toml --steps 40      # the engine as it is

The bench trains in this process, so the options reach every graph it compiles.
"""

import sys

import torch._inductor.config as inductor_config

from engine.cli.main import main


def apply(options: str) -> None:
    for item in filter(None, options.split(",")):
        name, _, value = item.partition("=")
        if not hasattr(inductor_config, name) or value not in ("0", "1"):
            print(f"bench_inductor: {item!r} is not NAME=0 or NAME=1 for an option of torch._inductor.config",
                  file=sys.stderr)
            sys.exit(2)
        setattr(inductor_config, name, value == "1")
        print(f"inductor: {name} = {value == '1'}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    apply(sys.argv[1])
    sys.exit(main(["bench", *sys.argv[2:]]))
