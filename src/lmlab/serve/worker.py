"""The engine thread: one background thread owns the one `Engine` and runs its scheduler.

HTTP handlers run on the asyncio loop and never touch the engine. They hand a `Job` (prompts
and sampling parameters) to the thread, which adds its requests to the engine between two steps,
so every job joins the running batch at once (continuous batching). After each step the thread
reports each streaming job's new text and every finished job through the job's `notify`
callback (for the server: a `call_soon_threadsafe` into the job's asyncio queue). A job that is
cancelled (its client went away, or its time ran out) leaves the engine before the next step and
its slots go to the next request.

Text deltas follow `Engine.stream`: text that could still become a stop string, or that ends
in an incomplete UTF-8 character, is held back, so the deltas of a sample join to exactly its
final `Completion.text`. Byte-fallback tokens (`<0xHH>`, char tokenizers) are held back until
the run of them ends too: the decoder turns a whole run into text or, if the run is not valid
UTF-8, into one U+FFFD per byte, so a later byte can change the text of earlier ones.

With logprobs, each delta also carries the tokens generated since the previous one (a final
stop token excepted, as in the non-streamed answer), so a stream's pieces join to exactly the
non-streamed logprobs too; a piece's tokens need not spell its text, which may be held back.
A job that scores its prompts reports each prompt's logprobs once its prefill has run.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lmlab.infer.engine import (
    Completion,
    Engine,
    GenerationError,
    Request,
    SamplingParams,
    TopLogprobs,
)
from lmlab.serve.logprobs import width

log = logging.getLogger(__name__)

Event = tuple[str, Any, Any]
"""("prompt", prompt index, Request) | ("delta", choice, Piece) | ("finish", choice, reason) |
("done", completions, None) | ("error", message, http_status) | ("cancelled", None, None)."""

FINAL = ("done", "error", "cancelled")


@dataclass
class Piece:
    """One streamed delta of a choice: new text, and with logprobs the tokens since the last."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[TopLogprobs] | None = None
    offset: int = 0
    """Characters of the choice's earlier tokens (`text_offset` of this piece's first token)."""


@dataclass(eq=False)
class Job:
    """Prompts (token ids) sampled with one set of parameters; choice = prompt * n + sample."""

    prompts: list[list[int]]
    params: SamplingParams
    notify: Callable[[list[Event]], None]
    """Called from the engine thread with each step's events for this job."""
    stream: bool = False
    """Report text deltas after every step (otherwise only the final completions)."""
    requests: list[Request] = field(default_factory=list)
    sent: dict[int, int] = field(default_factory=dict)
    """Characters already reported per choice."""
    tokens_sent: dict[int, int] = field(default_factory=dict)
    """Tokens whose logprobs were reported per choice."""
    widths: dict[int, int] = field(default_factory=dict)
    """Characters of those tokens' texts per choice."""
    scored: set[int] = field(default_factory=set)
    """Prompts whose logprobs were reported."""
    closed: set[int] = field(default_factory=set)
    """Choices whose finish was reported."""


class EngineWorker:
    """Runs `engine.step()` in a thread while there is work; takes jobs from any thread."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._commands: queue.SimpleQueue[tuple[str, Job] | None] = queue.SimpleQueue()
        self._jobs: list[Job] = []
        self._thread = threading.Thread(target=self._run, name="lmlab-engine", daemon=True)
        self.steps = 0
        self.tokens = 0
        """Tokens generated (finished, cancelled and failed jobs)."""
        self.prompt_tokens = 0
        """Prompt tokens prefilled (every admitted prompt, once)."""

    # --- any thread -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Cancel every job and end the thread."""
        if self._thread.is_alive():
            self._commands.put(None)
            self._thread.join()

    def submit(self, job: Job) -> None:
        self._commands.put(("add", job))

    def cancel(self, job: Job) -> None:
        """Drop a job (a no-op if it already ended); its slots are free for the next step."""
        self._commands.put(("cancel", job))

    def running(self) -> int:
        """Busy engine slots (read from another thread: a snapshot)."""
        return sum(s is not None for s in self.engine.slots)

    def waiting(self) -> int:
        return len(self.engine.waiting)

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Completion]]:
        """`Engine.generate` for other threads (reasoning strategies): blocks until done."""
        box: queue.SimpleQueue[list[Event]] = queue.SimpleQueue()
        self.submit(Job([list(p) for p in prompts], params, box.put))
        while True:
            for kind, value, _ in box.get():
                if kind == "done":
                    n = params.n
                    return [value[i : i + n] for i in range(0, len(value), n)]
                if kind in FINAL:
                    raise GenerationError(value or "generation was cancelled")

    # --- the engine thread ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            block = not self.engine.has_work()
            while True:
                try:
                    cmd = self._commands.get(block=block)
                except queue.Empty:
                    break
                block = False
                if cmd is None:
                    for job in list(self._jobs):
                        self._cancel(job)
                    return
                try:
                    (self._add if cmd[0] == "add" else self._cancel)(cmd[1])
                except Exception as e:  # a bug, not bad input: fail that job, keep serving
                    log.exception("engine command %s failed", cmd[0])
                    self._fail(cmd[1], e)
            if not self.engine.has_work():
                continue
            try:
                self.engine.step()
            except Exception as e:  # a bug, not bad input: fail every job, keep serving
                log.exception("engine step failed")
                for job in list(self._jobs):
                    self._fail(job, e)
                continue
            self.steps += 1
            for job in list(self._jobs):
                self._report(job)

    def _add(self, job: Job) -> None:
        try:
            for i, ids in enumerate(job.prompts):  # noise streams numbered as generate() does
                n = job.params.n
                job.requests.append(self.engine.add_request(ids, job.params, first_stream=i * n))
        except GenerationError as e:
            for r in job.requests:
                self.engine.cancel(r)
            self._send(job, [("error", str(e), 400)])
            return
        self._jobs.append(job)

    def _cancel(self, job: Job, event: Event = ("cancelled", None, None)) -> None:
        if job not in self._jobs:
            return
        self._jobs.remove(job)
        for r in job.requests:
            self.engine.cancel(r)
        self._count(job)
        self._send(job, [event])

    def _fail(self, job: Job, e: Exception) -> None:
        if job in self._jobs:
            self._jobs.remove(job)
        for r in job.requests:
            with contextlib.suppress(Exception):
                self.engine.cancel(r)
        self._count(job)
        self._send(job, [("error", f"internal engine error: {type(e).__name__}: {e}", 500)])

    def _report(self, job: Job) -> None:
        tok = self.engine.tokenizer
        events: list[Event] = []
        if job.stream:
            for p, req in enumerate(job.requests):
                if req.prompt_logprobs is not None and p not in job.scored:
                    events.append(("prompt", p, req))
                    job.scored.add(p)
                for seq in req.seqs:
                    choice = p * job.params.n + seq.index
                    if choice in job.closed:
                        continue
                    sent = job.sent.get(choice, 0)
                    text = self.engine.settled_text(seq)
                    piece = Piece(text[sent:])
                    if job.params.logprobs:
                        self._tokens(job, choice, seq, piece)
                    if piece.text or piece.token_ids:
                        events.append(("delta", choice, piece))
                        job.sent[choice] = len(text)
                    if seq.finish_reason is not None:
                        events.append(("finish", choice, seq.finish_reason))
                        job.closed.add(choice)
        if all(r.finished for r in job.requests):
            self._jobs.remove(job)
            done = [c for r in job.requests for c in r.completions(tok)]
            self._count(job)
            events.append(("done", done, None))
        if events:
            self._send(job, events)

    def _count(self, job: Job) -> None:
        """Add an ended job's tokens to the counters (prompts only if they were prefilled)."""
        for r in job.requests:
            if any(s.slot >= 0 for s in r.seqs):
                self.prompt_tokens += len(r.prompt)
            self.tokens += sum(len(s.token_ids) for s in r.seqs)

    def _tokens(self, job: Job, choice: int, seq: Any, piece: Piece) -> None:
        """Put the choice's tokens not yet reported into `piece` (all generated so far, less a
        final stop token, which the answer's logprobs leave out too)."""
        lo = job.tokens_sent.get(choice, 0)
        hi = len(seq.token_ids)
        if seq.finish_reason == "stop" and seq.stop_at is None:  # ended by a stop token
            hi -= 1
        if hi <= lo:
            return
        piece.token_ids = seq.token_ids[lo:hi]
        piece.logprobs = seq.logprobs[lo:hi]
        if job.params.top_logprobs:
            piece.top_logprobs = seq.top_logprobs[lo:hi]
        piece.offset = job.widths.get(choice, 0)
        job.widths[choice] = piece.offset + width(self.engine.tokenizer, piece.token_ids)
        job.tokens_sent[choice] = hi

    @staticmethod
    def _send(job: Job, events: list[Event]) -> None:
        try:
            job.notify(events)
        except RuntimeError:  # the receiving event loop is closed (server shutting down)
            log.debug("dropped events of a job whose loop is closed")
