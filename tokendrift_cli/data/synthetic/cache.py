"""Train / validation splits of the language, generated from a seed and cached on disk by content."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from tokendrift_cli.data.synthetic.sampling import Sampling


class DatasetCache(Sampling):
    """Datasets of samples, stored under a key naming the automaton's content and the arguments."""

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        digest.update(json.dumps(self.vocab).encode())
        digest.update(self.emit.numpy().tobytes())
        digest.update(self.next_state.numpy().tobytes())
        return digest.hexdigest()[:16]

    def build_dataset(self, num_train: int, num_valid: int, seq_len: int, seed: int, cache_dir: str | os.PathLike | None = None):
        """Train / validation splits generated from the seed (validation from a derived seed), cached on disk."""
        from datasets import Dataset, DatasetDict, load_from_disk

        key = f"synthetic-{self.fingerprint()}-L{seq_len}-n{num_train}-v{num_valid}-s{seed}"
        target = Path(cache_dir or default_cache_dir()) / key
        if target.is_dir():
            return load_from_disk(str(target))
        data = DatasetDict({
            "train": Dataset.from_dict({"input_ids": self.sample(num_train, seq_len, seed).tolist()}),
            "validation": Dataset.from_dict({"input_ids": self.sample(num_valid, seq_len, seed + 7_919_000).tolist()}),
        })
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{key}."))
        try:
            data.save_to_disk(str(tmp))
            os.replace(tmp, target)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not target.is_dir():  # another process may have won the race; anything else is real
                raise
        return load_from_disk(str(target))


def default_cache_dir() -> Path:
    return Path(os.environ.get("TOKENDRIFT_CACHE", Path.home() / ".cache" / "tokendrift"))
