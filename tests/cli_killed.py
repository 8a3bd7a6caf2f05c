"""The command line, made to stop while it writes the video, for the kill tests (``tests/test_cli_killed.py``).

    python tests/cli_killed.py MARKER -- <command-line flags>

After the first chunk of frames has gone into the video, this writes the file MARKER and waits there (as a long
encode would), so that a test can send SIGTERM or SIGKILL exactly while the video is being written.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main() -> int:
    marker = Path(sys.argv[1])
    argv = sys.argv[sys.argv.index("--") + 1 :]

    from vexpress_model.cli import main as cli_main
    from vexpress_model.outputs.video import VideoWriter

    write = VideoWriter.write

    def write_then_wait(self, frames):
        write(self, frames)
        marker.write_text("writing")
        while True:  # ended by the test's signal
            time.sleep(1.0)

    VideoWriter.write = write_then_wait
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
