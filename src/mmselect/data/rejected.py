"""The one record of a record left out, from the reader to ``rejected.jsonl``.

It lives in the data layer because the reader makes the first ones; extraction, selection and
export add theirs with the same type, each naming its stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class RejectedRecord:
    """A record left out, with why and at which stage (``read``, ``extract``, ``select``): one line
    of ``rejected.jsonl``."""

    key: str
    reason: str
    stage: str
    position: int | None = None
    id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "position": self.position, "id": self.id, "reason": self.reason, "stage": self.stage}

    def __getitem__(self, field_name: str) -> Any:
        """Fields by name too, as in a ``rejected.jsonl`` line (``record["reason"]``)."""
        if field_name not in self.__dataclass_fields__:
            raise KeyError(field_name)
        return getattr(self, field_name)

    @classmethod
    def from_json(cls, item: "dict[str, Any] | RejectedRecord") -> "RejectedRecord":
        if isinstance(item, RejectedRecord):
            return item
        return cls(key=item["key"], reason=item["reason"], stage=item.get("stage", ""), position=item.get("position"),
                   id=item.get("id"))

    @classmethod
    def for_sample(cls, sample, reason: str, stage: str) -> "RejectedRecord":
        return cls(key=sample.key, reason=reason, stage=stage, position=sample.position, id=sample.id)
