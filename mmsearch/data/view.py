"""What a trial's model sees of a prepared table: the columns the tabular tower reads and the text
the text encoder reads.

The prepared data fixes the table (schema, split, fitted preprocessing). A trial's view starts as
the whole table; a trick may change it (``Trick.configure_view``, e.g. tabular-as-text renders
columns into the text) and ``model.modalities`` may cut it to some modalities (``only``) before
the model is built. The view is a function of the trial's config
alone, so an exported bundle rebuilds the same view from a member's config and a row is seen
identically at train and predict time.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ..errors import ConfigError
from .schema import Schema
from .tabular import TabularPreprocessor


@dataclass(frozen=True)
class TableView:
    schema: Schema                   # the prepared table's schema (label, problem, column roles)
    tabular: TabularPreprocessor     # fitted state of the columns the tabular tower reads
    rendered: tuple[str, ...] = ()   # numeric / categorical columns rendered into the text
    template: str = "{column}: {value}"
    fields_first: bool = False       # the rendered lines before the free text (default: after it)
    excluded: frozenset[str] = frozenset()  # modalities the model does not read (model.modalities)

    @classmethod
    def of(cls, data) -> "TableView":
        """The whole table, as prepared (`data` has .schema and .tabular; a view is returned as is)."""
        return data if isinstance(data, TableView) else cls(data.schema, data.tabular)

    def has(self, modality: str) -> bool:
        """Whether the view gives the model any input of this modality."""
        if modality in self.excluded:
            return False
        if modality == "image":
            return bool(self.schema.by_role("image"))
        if modality == "text":
            return bool(self.schema.by_role("text") or self.rendered)
        return bool(self.tabular.numeric or self.tabular.categorical)

    @property
    def modalities(self) -> frozenset[str]:
        return frozenset(m for m in ("image", "text", "tabular") if self.has(m))

    def only(self, modalities: frozenset[str] | None) -> "TableView":
        """The view restricted to `modalities` (None: unchanged); the tabular tower reads no column
        when tabular is not among them. Raises ConfigError when none of them is left."""
        if modalities is None:
            return self
        present = self.modalities
        if not modalities & present:
            raise ConfigError(f"model.modalities={'+'.join(sorted(modalities))}: this table has no such input "
                              f"(its modalities: {', '.join(sorted(present))})")
        excluded = frozenset(present - modalities)
        tabular = self.tabular.without([*self.tabular.numeric, *self.tabular.categorical]) if "tabular" in excluded else self.tabular
        return replace(self, tabular=tabular, excluded=self.excluded | excluded)

    def with_rendered(self, columns: list[str], template: str, *, drop_from_tabular: bool,
                      fields_first: bool = False) -> "TableView":
        """Also render `columns` into each row's text; with drop_from_tabular the tabular tower no
        longer reads them."""
        tabular = self.tabular.without(columns) if drop_from_tabular else self.tabular
        return replace(self, tabular=tabular, rendered=(*self.rendered, *columns), template=template,
                       fields_first=fields_first)

    def texts(self, rows: pd.DataFrame) -> list[str] | None:
        """One string per row for the text encoder (None: the view has no text): the free text and
        the rendered columns, one `template` line each (a missing value: no line), joined by
        join_text."""
        parts = self.text_parts(rows)
        return None if parts is None else [self.join_text(fields, free) for fields, free in parts]

    def join_text(self, fields: str, free: str) -> str:
        """The text the encoder reads. Free text first (the default), so a tokenizer that truncates
        at model.max_text_len cuts rendered fields (which the tabular tower may also read), never
        the row's own words; fields_first puts the short fields where truncation never reaches,
        at the cost of the free text's end (on cloth at 64 tokens that cost 0.92 -> 0.77 ROC AUC)."""
        return "\n".join(part for part in ((fields, free) if self.fields_first else (free, fields)) if part)

    def text_parts(self, rows: pd.DataFrame) -> list[tuple[str, str]] | None:
        """(rendered field lines, free text) per row, each '' when absent: what `texts` joins.
        Kept apart so that training-time text edits touch the free text, never the fields."""
        if not self.has("text"):
            return None
        free = row_texts(rows, self.schema.by_role("text")) if self.schema.by_role("text") else [""] * len(rows)
        if not self.rendered:
            return [("", text) for text in free]
        fields = {c: _formatted(rows[c], numeric=self.schema.columns[c] == "numeric") for c in self.rendered}
        lines = ["\n".join(self.template.format(column=c, value=fields[c][i]) for c in self.rendered if fields[c][i] is not None)
                 for i in range(len(rows))]
        return list(zip(lines, free))


def row_texts(rows, columns: list[str]) -> list[str]:
    """All text columns of a row as one string ('' when every one is missing)."""
    def clean(v) -> str:
        return "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip()

    cols = {c: [clean(v) for v in rows[c]] for c in columns}
    if len(columns) == 1:
        return cols[columns[0]]
    return ["\n".join(f"{c}: {cols[c][i]}" for c in columns if cols[c][i]) for i in range(len(rows))]


def _formatted(values: pd.Series, *, numeric: bool) -> list[str | None]:
    """Cell -> the string rendered (None: missing). Numbers with up to 6 significant digits and no
    trailing zeros (33.0 -> '33'), so the text reads like the table, not like float noise."""
    if numeric:
        x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        return [format(v, ".6g") if np.isfinite(v) else None for v in x]
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) or str(v).strip() == "" else str(v).strip()
            for v in values]
