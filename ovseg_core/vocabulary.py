"""The run-time vocabulary: the class names (with synonyms) a user or planner asks for.

User text format, e.g. ``"car; road [stuff]; person, child, girl"``:
``;`` or a newline separates classes, ``,`` separates synonyms (the first is the class
name), and an optional trailing ``[stuff]`` or ``[thing]`` tag sets the kind
(default thing, because open-vocabulary queries are mostly about objects).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Tuple, Union

# Each image carries [Q, K] logits and, for the semantic map, [K, H, W] scores, so K
# sets per-frame memory: at 4096 classes the float32 [K, H, W] of one 640x480 frame is
# already 5 GB. That is ~5x ADE-full (847 classes); a longer list is most likely a
# mistake (e.g. a word file pasted as one vocabulary).
MAX_CLASSES = 4096

_TAGS = {"thing": True, "stuff": False}
# Characters the text format gives meaning to; a name holding one could not be written
# back by to_text() and parsed to the same vocabulary, which key() relies on.
_RESERVED = re.compile(r"[;,\[\]\n\r]")
_TRAILING_TAG = re.compile(r"\[([^\[\]]*)\]\s*$")


def _clean(text: str) -> str:
    """Collapse whitespace so "traffic  light" and "traffic light" are one name."""
    return " ".join(text.split())


@dataclass(frozen=True)
class VocabClass:
    """One class. ``synonyms`` always starts with ``name`` (it is prepended if absent)."""

    name: str
    synonyms: Tuple[str, ...] = ()
    is_thing: bool = True

    def __post_init__(self):
        words = [_clean(w) for w in (self.name, *self.synonyms)]
        if not words[0]:
            raise ValueError("a vocabulary class has an empty name; give every class a name")
        for w in words:
            if not w:
                raise ValueError(f"class {words[0]!r} has an empty synonym; remove it")
            if _RESERVED.search(w):
                raise ValueError(
                    f"class {words[0]!r}: {w!r} contains one of ; , [ ] or a newline, which "
                    f"the vocabulary format reserves ([ ] only for a trailing [stuff] or "
                    f"[thing] tag); for synonyms and tags use "
                    f"Vocabulary.parse(\"name, synonym [stuff]\")")
        object.__setattr__(self, "name", words[0])
        object.__setattr__(self, "synonyms", tuple(dict.fromkeys(words)))  # ordered dedupe
        object.__setattr__(self, "is_thing", bool(self.is_thing))

    def to_text(self) -> str:
        return ", ".join(self.synonyms) + ("" if self.is_thing else " [stuff]")


@dataclass(frozen=True)
class Vocabulary:
    classes: Tuple[VocabClass, ...]

    def __post_init__(self):
        classes = tuple(self.classes)
        object.__setattr__(self, "classes", classes)
        if not classes:
            raise ValueError("the vocabulary is empty; give at least one class name, "
                             "e.g. \"car; person; road [stuff]\"")
        if len(classes) > MAX_CLASSES:
            raise ValueError(
                f"the vocabulary has {len(classes)} classes, more than MAX_CLASSES="
                f"{MAX_CLASSES} (per-frame logits grow with it); split it or keep the "
                f"classes you need")
        seen = {}
        for c in classes:
            # The CLIP tokenizer lower-cases, so "Car" and "car" would be the same class.
            k = c.name.casefold()
            if k in seen:
                raise ValueError(
                    f"duplicate class name {c.name!r} (also {seen[k]!r}); list each class "
                    f"once and put alternative words after a comma as synonyms")
            seen[k] = c.name

    @classmethod
    def parse(cls, text: str) -> "Vocabulary":
        """Read the user format; blank entries (e.g. "car;;road" or a trailing ";") are
        skipped so hand-typed lists need no tidying."""
        if not isinstance(text, str):
            raise TypeError(f"Vocabulary.parse wants a str, got {type(text).__name__}")
        classes = []
        for entry in re.split(r"[;\n]", text):
            entry = entry.strip()
            if not entry:
                continue
            is_thing = True
            tag = _TRAILING_TAG.search(entry)
            if tag:
                kind = tag.group(1).strip().lower()
                if kind not in _TAGS:
                    raise ValueError(f"unknown tag [{tag.group(1)}] in {entry!r}; "
                                     f"use [stuff] or [thing]")
                is_thing = _TAGS[kind]
                entry = entry[:tag.start()]
            words = [w for w in (_clean(w) for w in entry.split(",")) if w]
            if not words:
                raise ValueError(f"vocabulary entry {entry!r} has a tag but no class name")
            classes.append(VocabClass(words[0], tuple(words), is_thing))
        return cls(tuple(classes))

    @classmethod
    def from_names(cls, names: Iterable[str],
                   is_thing: Optional[Sequence[bool]] = None) -> "Vocabulary":
        """One class per name, no synonyms; e.g. a dataset's class list."""
        if isinstance(names, str):
            raise TypeError("Vocabulary.from_names wants a list of names; for user text "
                            "use Vocabulary.parse")
        names = list(names)
        if any(not isinstance(n, str) for n in names):
            raise TypeError("Vocabulary.from_names wants a list of str")
        flags = [True] * len(names) if is_thing is None else list(is_thing)
        if len(flags) != len(names):
            raise ValueError(f"is_thing has {len(flags)} entries for {len(names)} names; "
                             f"give one flag per name or None")
        return cls(tuple(VocabClass(n, (), t) for n, t in zip(names, flags)))

    @classmethod
    def from_any(cls, x: Union["Vocabulary", str, Sequence[str]]) -> "Vocabulary":
        """Accept what callers naturally have: a Vocabulary, user text, or a name list."""
        if isinstance(x, Vocabulary):
            return x
        if isinstance(x, str):
            return cls.parse(x)
        if isinstance(x, (list, tuple)):
            return cls.from_names(x)
        raise TypeError(f"cannot make a Vocabulary from {type(x).__name__}; "
                        f"give a Vocabulary, a str like \"car; road [stuff]\" or a list of names")

    @property
    def names(self) -> list:
        return [c.name for c in self.classes]

    @property
    def is_thing(self) -> list:
        return [c.is_thing for c in self.classes]

    def __len__(self) -> int:
        return len(self.classes)

    def to_text(self) -> str:
        """Canonical user-format text; ``parse(v.to_text()) == v``."""
        return "; ".join(c.to_text() for c in self.classes)

    def key(self) -> str:
        """Stable across processes (unlike hash()), so it can name cache entries."""
        return hashlib.sha1(self.to_text().encode("utf-8")).hexdigest()
