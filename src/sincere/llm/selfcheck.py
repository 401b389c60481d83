"""``python -m sincere.llm.selfcheck``: can this machine run the embedded model?

Generates one token in a child process, so that a llama.cpp build for the wrong CPU
(which dies with SIGILL) is reported as a failure instead of killing the caller.
"""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
from llama_cpp import Llama
from sincere.llm.embedded import default_model_path
llm = Llama(model_path=str(default_model_path()), n_ctx=64, verbose=False)
llm.create_completion("Hi", max_tokens=1)
"""


def main() -> int:
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, check=False)
    if result.returncode != 0:
        print(
            f"embedded model self-check failed (exit {result.returncode})",
            file=sys.stderr,
        )
    return 0 if result.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
