"""Characters or words <-> ids <-> one-hot vectors, in a reproducible order.

The lectures build their vocabularies with `list(set(text))`, whose order changes from run to
run; here the symbols are always sorted, and the special tokens (`<pad>`, `<bos>`, `<eos>`,
`<unk>`) come first in a fixed order so that `<pad>` is id 0, the id Keras masks with
`mask_zero=True`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

PAD = "<pad>"
BOS = "<bos>"
EOS = "<eos>"
UNK = "<unk>"
_SPECIAL_ORDER = (PAD, BOS, EOS, UNK)
_LEVELS = ("char", "word")


@dataclass(frozen=True)
class Vocabulary:
    """An ordered list of symbols (characters or words) with encode, decode and one-hot.

    Build one with `Vocabulary.from_texts`; the constructor takes the final symbol list.

    Example:
        >>> vocab = Vocabulary.from_texts(["hihello"])
        >>> vocab.symbols
        ('e', 'h', 'i', 'l', 'o')
        >>> vocab.encode("hihell")
        array([1, 2, 1, 0, 3, 3], dtype=int32)
        >>> vocab.one_hot("hi").shape   # (timesteps, vocabulary size)
        (2, 5)
    """

    symbols: tuple[str, ...]
    level: str = "char"

    def __post_init__(self):
        if self.level not in _LEVELS:
            raise ValueError(
                f"Unknown vocabulary level {self.level!r}: expected one of {_LEVELS}."
            )
        if not self.symbols:
            raise ValueError("A vocabulary needs at least one symbol; received none.")
        if len(set(self.symbols)) != len(self.symbols):
            repeated = sorted({s for s in self.symbols if self.symbols.count(s) > 1})
            raise ValueError(f"Vocabulary symbols must be unique; repeated: {repeated}.")
        object.__setattr__(
            self, "_index", {symbol: i for i, symbol in enumerate(self.symbols)}
        )

    @classmethod
    def from_texts(
        cls,
        texts: Iterable[str] | str,
        *,
        level: str = "char",
        pad: bool = False,
        bos_eos: bool = False,
        unk: bool = False,
    ) -> "Vocabulary":
        """Builds a vocabulary of every character (or whitespace-separated word) in `texts`.

        Args:
            texts: a string or an iterable of strings. Any Unicode text works.
            level: `"char"` or `"word"`.
            pad: put `<pad>` first (id 0, the id `Embedding(mask_zero=True)` masks).
            bos_eos: add `<bos>` and `<eos>` (for seq2seq targets).
            unk: add `<unk>`; unknown symbols then encode to it instead of raising.

        Returns:
            A `Vocabulary` whose regular symbols are sorted.
        """
        if level not in _LEVELS:
            raise ValueError(f"Unknown vocabulary level {level!r}: expected one of {_LEVELS}.")
        if isinstance(texts, str):
            texts = [texts]
        symbols: set[str] = set()
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"Expected strings, got {type(text).__name__}: {text!r}.")
            symbols.update(text if level == "char" else text.split())
        if not symbols:
            raise ValueError("Cannot build a vocabulary from empty text.")
        wanted = {PAD: pad, BOS: bos_eos, EOS: bos_eos, UNK: unk}
        specials = tuple(token for token in _SPECIAL_ORDER if wanted[token])
        clashing = sorted(symbols & set(specials))
        if clashing:
            raise ValueError(f"The text itself contains special tokens {clashing}.")
        return cls(specials + tuple(sorted(symbols)), level=level)

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, symbol: str) -> bool:
        return symbol in self._index

    def id_of(self, symbol: str) -> int | None:
        """The id of `symbol`, or None if it is not in the vocabulary."""
        return self._index.get(symbol)

    @property
    def pad_id(self) -> int | None:
        return self.id_of(PAD)

    @property
    def bos_id(self) -> int | None:
        return self.id_of(BOS)

    @property
    def eos_id(self) -> int | None:
        return self.id_of(EOS)

    @property
    def unk_id(self) -> int | None:
        return self.id_of(UNK)

    def split(self, text: str | Sequence[str]) -> list[str]:
        """Splits text into this vocabulary's units (characters or words)."""
        if isinstance(text, str):
            return list(text) if self.level == "char" else text.split()
        return list(text)

    def encode(self, text: str | Sequence[str], *, length: int | None = None) -> np.ndarray:
        """Maps text to ids, optionally padded with `<pad>` (or truncated) to `length`.

        Args:
            text: a string (split by characters or words) or a list of symbols.
            length: pad at the end with `<pad>` or cut to this many steps.

        Returns:
            int32 array of shape `(timesteps,)`.
        """
        units = self.split(text)
        if not units:
            raise ValueError("Cannot encode empty text: expected at least one symbol.")
        ids = []
        for unit in units:
            index = self._index.get(unit)
            if index is None:
                if self.unk_id is None:
                    raise ValueError(
                        f"Unknown symbol {unit!r} in {_shorten(text)!r}: it is not in the "
                        f"vocabulary {list(self.symbols)}. Rebuild the vocabulary with this "
                        "text, or build it with unk=True to map unknown symbols to <unk>."
                    )
                index = self.unk_id
            ids.append(index)
        if length is not None:
            ids = self._fit(ids, length)
        return np.asarray(ids, dtype=np.int32)

    def encode_batch(self, texts: Sequence[str], *, length: int | None = None) -> np.ndarray:
        """Encodes several texts, padded at the end to `length` (default: the longest).

        Returns:
            int32 array of shape `(batch, timesteps)`.
        """
        if len(texts) == 0:
            raise ValueError("Cannot encode an empty batch: expected at least one text.")
        encoded = [self.encode(text) for text in texts]
        longest = max(len(ids) for ids in encoded)
        if length is None:
            length = longest
        return np.stack([self._fit(list(ids), length) for ids in encoded]).astype(np.int32)

    def _fit(self, ids: list[int], length: int) -> np.ndarray:
        if length <= 0:
            raise ValueError(f"`length` must be a positive integer, got {length}.")
        if len(ids) < length:
            if self.pad_id is None:
                raise ValueError(
                    f"Padding to length {length} needs a <pad> token: build the vocabulary "
                    "with pad=True."
                )
            ids = ids + [self.pad_id] * (length - len(ids))
        return np.asarray(ids[:length], dtype=np.int32)

    def decode(self, ids: Iterable[int], *, strip_special: bool = True) -> str:
        """Maps ids back to text (characters joined, words joined by spaces).

        `strip_special` drops `<pad>`, `<bos>` and `<eos>`.
        """
        units = []
        for index in np.asarray(list(ids)).reshape(-1):
            index = int(index)
            if not 0 <= index < len(self.symbols):
                raise ValueError(
                    f"Id {index} is out of range for a vocabulary of {len(self.symbols)} symbols."
                )
            symbol = self.symbols[index]
            if strip_special and symbol in (PAD, BOS, EOS):
                continue
            units.append(symbol)
        return "".join(units) if self.level == "char" else " ".join(units)

    def one_hot(self, text_or_ids, *, length: int | None = None) -> np.ndarray:
        """One-hot float32 vectors, shape `(timesteps, len(self))`, or `(batch, timesteps, len)`
        for a batch of ids. `<pad>` rows (id 0 when `pad=True`) are all zeros, so that a
        `Masking` layer can skip them."""
        if isinstance(text_or_ids, (str, list, tuple)) and (
            isinstance(text_or_ids, str) or (text_or_ids and isinstance(text_or_ids[0], str))
        ):
            ids = self.encode(text_or_ids, length=length)
        else:
            ids = np.asarray(text_or_ids, dtype=np.int64)
            if ids.size == 0:
                raise ValueError("Cannot one-hot encode an empty input.")
            if ids.min() < 0 or ids.max() >= len(self):
                raise ValueError(
                    f"Ids must be in [0, {len(self)}); got values from {ids.min()} to {ids.max()}."
                )
        vectors = np.eye(len(self), dtype=np.float32)[ids]
        if self.pad_id is not None:
            vectors[ids == self.pad_id] = 0.0
        return vectors

    def to_json(self) -> str:
        """The vocabulary as JSON: what the exported models carry as metadata."""
        return json.dumps(self.to_dict(), ensure_ascii=False)

    def to_dict(self) -> dict:
        return {
            "level": self.level,
            "symbols": list(self.symbols),
            "pad_id": self.pad_id,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "unk_id": self.unk_id,
        }

    @classmethod
    def from_json(cls, text) -> "Vocabulary":
        """The vocabulary `to_json` wrote.

        Raises:
            ValueError: for text that is not that JSON object (naming what is wrong), so a
                vocabulary read from a file someone else wrote never fails obscurely.
        """
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"Vocabulary JSON is not valid UTF-8: {error}.") from None
        if not isinstance(text, str):
            raise ValueError(f"Vocabulary JSON must be text; got {type(text).__name__}.")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"Vocabulary JSON is not valid JSON: {error}.") from None
        except RecursionError:  # JSON nested deeper than Python's parser recurses
            raise ValueError("Vocabulary JSON is nested too deeply to be a vocabulary.") from None
        if not isinstance(data, dict):
            raise ValueError(
                f"Vocabulary JSON must be an object with 'symbols' (a list of strings); got "
                f"{type(data).__name__}. Write it with Vocabulary.to_json().")
        symbols = data.get("symbols")
        if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
            raise ValueError(
                "Vocabulary JSON needs 'symbols': a list of strings; got "
                f"{_shorten(repr(symbols))}. Write it with Vocabulary.to_json().")
        level = data.get("level", "char")
        if not isinstance(level, str):
            raise ValueError(f"Vocabulary JSON 'level' must be 'char' or 'word'; got {level!r}.")
        return cls(tuple(symbols), level=level)


def _shorten(text, limit: int = 60) -> str:
    text = text if isinstance(text, str) else " ".join(map(str, text))
    return text if len(text) <= limit else text[: limit - 3] + "..."
