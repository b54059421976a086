"""The progress bar (texts, texts/s, ETA) and the summary line, both on stderr.

The bar is drawn only on a terminal and without --quiet: a log file gets the summary alone."""
from __future__ import annotations

import shutil
import sys
import time


class Progress:
    def __init__(self, total: int | None, quiet: bool, unit: str = "texts"):
        from tqdm import tqdm

        self.quiet = quiet
        self.unit = unit
        self.start = time.perf_counter()
        self.done = 0
        self.skipped = 0
        # A terminal that reports no size (a fresh pty, some CI consoles) would get an empty bar: tqdm
        # draws nothing at zero columns and hides bars below the last of zero rows.
        size = shutil.get_terminal_size((100, 24))
        self.bar = tqdm(total=total, unit=f" {unit}", unit_scale=True, ncols=size.columns, nrows=size.lines,
                        smoothing=0.1,
                        disable=quiet or not sys.stderr.isatty(), file=sys.stderr)

    def skip(self, n: int) -> None:
        """Rows a resumed run finds already done: they count towards the bar, not the rate."""
        self.skipped += n
        self.bar.update(n)

    def advance(self, n: int) -> None:
        self.done += n
        self.bar.update(n)

    def close(self, rows: int, errors: int, output: str) -> str:
        self.bar.close()
        seconds = time.perf_counter() - self.start
        rate = self.done / seconds if seconds > 0 else 0.0
        resumed = f", {self.skipped} done before" if self.skipped else ""
        line = (f"{rows} {self.unit} -> {output}: {errors} errors{resumed}, {self.done} {self.unit} in {seconds:.1f} s "
                f"({rate:.1f} {self.unit}/s)")
        if not self.quiet:
            print(line, file=sys.stderr, flush=True)
        return line
