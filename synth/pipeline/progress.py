"""Live progress of a run: per stage done / in flight / failed, accept rate, tokens/s, ETA.

`Progress` is plain counters the driver updates; `ProgressDisplay` renders them with rich (a live
table on a terminal, one line every few seconds otherwise, so CI logs stay readable).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.live import Live
from rich.table import Table

STAGES = ("tools", "agents", "tasks", "rollouts", "judgments")


@dataclass
class StageCounts:
    done: int = 0
    in_flight: int = 0
    failed: int = 0


@dataclass
class Progress:
    target: int
    already_done: int = 0
    stages: dict[str, StageCounts] = field(default_factory=lambda: {s: StageCounts() for s in STAGES})
    accepted: int = 0
    judged: int = 0
    completion_tokens: int = 0
    started: float = field(default_factory=time.monotonic)

    def begin(self, stage: str) -> None:
        self.stages[stage].in_flight += 1

    def end(self, stage: str, ok: bool = True, count: int = 1) -> None:
        counts = self.stages[stage]
        counts.in_flight -= 1
        if ok:
            counts.done += count
        else:
            counts.failed += 1

    @property
    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-6)

    @property
    def accept_rate(self) -> float:
        return self.accepted / self.judged if self.judged else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.elapsed

    @property
    def eta_s(self) -> float | None:
        if not self.judged:
            return None
        remaining = self.target - self.already_done - self.judged
        return max(remaining, 0) * self.elapsed / self.judged

    def line(self) -> str:
        parts = [f"{s} {c.done}/{c.in_flight}/{c.failed}" for s, c in self.stages.items()]
        eta = self.eta_s
        return (
            f"[{self.elapsed:6.0f}s] judged {self.already_done + self.judged}/{self.target} "
            f"accept {self.accept_rate:.0%} | {self.tokens_per_s:.0f} tok/s | "
            f"ETA {'?' if eta is None else f'{eta:.0f}s'} | done/in-flight/failed: " + ", ".join(parts)
        )

    def table(self) -> Table:
        table = Table(title=f"synth run: {self.already_done + self.judged}/{self.target} judged trajectories")
        for col in ("stage", "done", "in flight", "failed"):
            table.add_column(col, justify="right" if col != "stage" else "left")
        for stage, c in self.stages.items():
            table.add_row(stage, str(c.done), str(c.in_flight), str(c.failed))
        eta = self.eta_s
        table.caption = (
            f"accept rate {self.accept_rate:.0%} · {self.tokens_per_s:.0f} completion tok/s · "
            f"elapsed {self.elapsed:.0f}s · ETA {'?' if eta is None else f'{eta:.0f}s'}"
        )
        return table


class ProgressDisplay:
    """Renders `progress` until stopped; `enabled=False` makes it silent (library use, tests)."""

    def __init__(self, progress: Progress, console: Console | None = None, enabled: bool = True,
                 interval_s: float = 5.0) -> None:
        self.progress = progress
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._live: Live | None = None

    async def __aenter__(self) -> ProgressDisplay:
        if not self.enabled:
            return self
        if self.console.is_terminal:
            self._live = Live(self.progress.table(), console=self.console, refresh_per_second=2)
            self._live.start()
            self._task = asyncio.create_task(self._refresh(0.5))
        else:
            self._task = asyncio.create_task(self._refresh(self.interval_s))
        return self

    async def _refresh(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            if self._live is not None:
                self._live.update(self.progress.table())
            else:
                self._print_line()

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._live is not None:
            self._live.update(self.progress.table())
            self._live.stop()
        elif self.enabled:
            self._print_line()

    def _print_line(self) -> None:
        # One physical line per report, however narrow the console rich assumes for a log (80
        # columns): a wrapped line splits its stage counts from its time, and `grep judged` loses them.
        self.console.print(self.progress.line(), highlight=False, soft_wrap=True)
