"""Write a 50/30/20 mix file over a folder holding the three stand-in corpora.

usage: python lab/make_standin_mix.py CORPORA_DIR OUT.toml [--repeat]
(CORPORA_DIR holds textbooks.jsonl.gz, web.jsonl.gz and educational.jsonl.gz)
"""

import sys
from pathlib import Path

SOURCES = [("textbooks", 0.5, "textbooks.jsonl.gz"), ("web", 0.3, "web.jsonl.gz"),
           ("educational", 0.2, "educational.jsonl.gz")]


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    corpora, out = Path(argv[0]).resolve(), Path(argv[1])
    repeat = "--repeat" in argv[2:]
    lines = ['description = "stand-in corpora, 50/30/20"', 'tokenizer = "gpt2"', "validation_share = 0.005",
             "seed = 42"]
    for name, weight, file in SOURCES:
        if not (corpora / file).exists():
            print(f"{corpora / file}: not found", file=sys.stderr)
            return 2
        lines += ["", "[[sources]]", f'name = "{name}"', f"weight = {weight}", f'path = "{corpora / file}"',
                  f"repeat = {'true' if repeat else 'false'}"]
    out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
