"""The Gram of the run so far, grown at each update by the checkpoints that finished since.

`LiveGram.update(run)` takes the run as `open_run` sees it now (finished checkpoints only) and
adds the new checkpoints' rows with `grow_gram` (one pass that reads every checkpoint once). The
result is saved in the cache under the key a one-shot pass over the same files gets, so a
`relex analyze` afterwards is a cache hit and equal.

Rotation. A new checkpoint's row needs <Δ_new, Δ_i> for every earlier i, so Δ_i must still be
readable. With --retain every analysed checkpoint is hard-linked into the cache and stays
readable: the run so far keeps every checkpoint ever analysed. Without it, a checkpoint the
trainer deleted keeps its Gram entries only until the next checkpoint arrives; then it leaves the
analysis (its products with the new checkpoint cannot be computed), with a note saying so.
"""

from dataclasses import dataclass, field
from pathlib import Path

from .. import cache
from ..gram import LocalEngine, RunGram, compute_gram, grow_gram
from ..io.discover import Run
from ..stream import open_layout
from .retain import retain, retain_root


@dataclass
class Update:
    """What one update added: the new steps, and the steps that left the analysis (deleted, not retained)."""
    new_steps: list
    dropped_steps: list = field(default_factory=list)


@dataclass
class LiveGram:
    """The RunGram of every checkpoint analysed so far (`run_gram`), and where each is read from.

    cache_dir: the Gram cache (and the retained checkpoints with `retain`). engine: anything with
    `gram_sums` (default `LocalEngine()`).
    """
    cache_dir: Path
    engine: object = None
    chunk_mb: float = 256
    retain: bool = False
    progress: object = False
    use_cache: bool = True  # False: the first update does a fresh pass (later ones only grow it)
    run_gram: RunGram | None = None
    notes: list = field(default_factory=list)  # messages for the user, each said once by the caller
    _retained: dict = field(default_factory=dict)  # step → Checkpoint in the cache, the base under -1 (retain)
    _most_present: int = 0
    _warned_shrink: bool = False

    def __post_init__(self):
        self.cache_dir = Path(self.cache_dir)
        self.engine = self.engine or LocalEngine()

    @property
    def steps(self) -> list:
        return [] if self.run_gram is None else [int(step) for step in self.run_gram.steps]

    def update(self, run: Run) -> Update | None:
        """Add the checkpoints of `run` newer than the latest analysed; None when there are none."""
        present = {checkpoint.step: checkpoint for checkpoint in run.checkpoints}
        self._note_shrinking(run, present)
        if self.retain:
            self._retain(run, present)
        latest = self.steps[-1] if self.steps else -1
        new = [present[step] for step in sorted(present) if step > latest]
        if not new:
            return None
        readable, dropped = [], []
        for step in self.steps:
            location = present.get(step) or self._retained.get(step)
            (readable if location is not None else dropped).append((step, location))
        read_run = Run(source=run.source, base=run.base,
                       checkpoints=tuple(location for _, location in readable) + tuple(new),
                       sources=run.sources, notes=list(run.notes))
        if self.run_gram is None:
            grown = compute_gram(read_run, cache_dir=self.cache_dir, use_cache=self.use_cache, chunk_mb=self.chunk_mb,
                                 progress=self.progress, engine=self.engine)
        else:
            previous = self.run_gram
            if dropped:
                previous = previous.select([position for position, step in enumerate(self.steps)
                                            if step not in {step for step, _ in dropped}])
                self.notes.append(self._dropped_note([step for step, _ in dropped], new[0].step))
            grown = self._grow(previous, read_run)
        self.run_gram = grown
        self._save_for_the_folder(run, present)
        return Update([checkpoint.step for checkpoint in new], [step for step, _ in dropped])

    def _grow(self, previous: RunGram, read_run: Run) -> RunGram:
        with open_layout(read_run) as layout:
            grown = grow_gram(previous, layout, engine=self.engine, chunk_mb=self.chunk_mb, progress=self.progress)
            grown.fingerprint = cache.fingerprint(layout)
        cache.save_or_say(grown, self.cache_dir)
        return grown

    def _save_for_the_folder(self, run: Run, present: dict) -> None:
        """Where the checkpoints read are not exactly the run folder's (some were retained and deleted
        since), also save the Gram of the folder's checkpoints under the folder's own key."""
        if [checkpoint.path for checkpoint in self.run_gram.run.checkpoints] == \
                [checkpoint.path for checkpoint in run.checkpoints] or not set(present) <= set(self.steps):
            return
        positions = [self.steps.index(step) for step in sorted(present)]
        with open_layout(run) as layout:
            folder_gram = self.run_gram.select(positions)
            folder_gram.fingerprint = cache.fingerprint(layout)
        cache.save_or_say(folder_gram, self.cache_dir)


    def _retain(self, run: Run, present: dict) -> None:
        root = retain_root(self.cache_dir, run)
        if -1 not in self._retained and run.base.path.exists():
            self._retained[-1] = retain(run.base, run, root)
        for step, checkpoint in present.items():
            if step not in self._retained:
                self._retained[step] = retain(checkpoint, run, root)

    def _note_shrinking(self, run: Run, present: dict) -> None:
        if len(present) < self._most_present and not self._warned_shrink:
            self._warned_shrink = True
            gone = sorted(set(self.steps) - set(present))
            what = f" (steps {', '.join(map(str, gone))} are gone)" if gone else ""
            keep = ("--retain keeps the analysed ones in the cache" if not self.retain
                    else "the analysed ones are retained in the cache")
            self.notes.append(f"warning: the run now holds {len(present)} checkpoints, fewer than the "
                              f"{self._most_present} it held{what}: the trainer deletes old checkpoints; {keep}")
        self._most_present = max(self._most_present, len(present))

    @staticmethod
    def _dropped_note(steps, new_step) -> str:
        return (f"note: step(s) {', '.join(map(str, steps))} were deleted from the run before step {new_step} "
                "arrived; their products with it cannot be computed, so they leave the analysis from now on "
                "(--retain keeps deleted checkpoints readable)")

    def retained_checkpoint(self, step: int):
        return self._retained.get(step)
