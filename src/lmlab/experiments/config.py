"""Settings of the experiments: the emergence ladder's sizes, abilities and configuration."""

from __future__ import annotations

from dataclasses import dataclass

SIZES: dict[str, tuple[int, int, int]] = {
    # name: (layers, heads, d_model); "tiny" has the `small` preset's shape (the world run)
    "nano": (2, 2, 64),
    "micro": (3, 3, 96),
    "tiny": (4, 4, 128),
    "mini": (5, 4, 192),
    "small": (6, 4, 256),
    "medium": (8, 8, 512),
}

ABILITIES: dict[str, list[str]] = {
    "arithmetic": ["arith:1", "arith:2", "arith:3", "arith:4"],
    "icl": ["icl:k=0", "icl:k=1", "icl:k=2", "icl:k=4", "icl:k=8"],
    "instructions": ["strings"],
}


class EmergenceError(ValueError):
    """A bad ladder or setting (shown to the user as one line)."""


@dataclass
class LadderConfig:
    """What every size of the ladder is trained and evaluated with."""

    ladder: str = "nano,micro,tiny,mini"
    """Comma-separated sizes, smallest first: nano, micro, tiny, mini, small, medium."""
    corpus: str = "world:n=20000"
    """Pretraining corpus (the same for every size)."""
    steps: int = 600
    """Pretraining steps per size."""
    sft_steps: int = 300
    """Fine-tuning steps per size (world chats)."""
    n_world: int = 8000
    """World chats for fine-tuning."""
    abilities: str = "arithmetic,icl,instructions"
    """Comma-separated abilities to evaluate: arithmetic, icl, instructions."""
    n: int = 100
    """Test problems per task spec."""
    seed: int = 0
    """Seed of the test problems."""
    device: str = "cpu"
    """cpu or cuda[:N]."""

    def sizes(self) -> list[str]:
        names = [s.strip() for s in self.ladder.split(",") if s.strip()]
        bad = [s for s in names if s not in SIZES]
        if bad:
            raise EmergenceError(f"unknown size {bad[0]!r}; choose from {', '.join(SIZES)}")
        if len(names) < 2 or len(set(names)) != len(names):
            raise EmergenceError("a ladder needs at least 2 different sizes, e.g. nano,micro,tiny")
        return names

    def specs(self) -> dict[str, list[str]]:
        names = [a.strip() for a in self.abilities.split(",") if a.strip()]
        bad = [a for a in names if a not in ABILITIES]
        if bad or not names:
            raise EmergenceError(
                f"unknown ability {(bad or [''])[0]!r}; choose from {', '.join(ABILITIES)}"
            )
        return {a: ABILITIES[a] for a in names}

    def validate(self) -> None:
        self.sizes()
        self.specs()
        for name, v in (("steps", self.steps), ("sft_steps", self.sft_steps), ("n", self.n)):
            if v < 1:
                raise EmergenceError(f"{name} must be >= 1, got {v}")
