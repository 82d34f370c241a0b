from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError
from . import Trick, register_trick


@register_trick
class TabularAsText(Trick):
    """Render tabular columns into the text the text encoder reads, one line per column,
    `template` with {column} and {value} (default "Age: 33"), after the row's free text
    (`position: before` puts them first: see TableView.join_text for what truncation does). A
    pretrained text encoder then reads the fields with their names, which helps text + tabular
    tables (Tang et al.: the "convert tabular to text" trick). `columns` picks which: categorical,
    numeric or all. With drop_from_tabular the tabular tower no longer reads them (a table whose
    every tabular column is rendered then has no tabular tower); otherwise both read them. A table
    without a text column gets one: the rendered fields. A missing value gets no line (the
    encoder sees its absence, as the tabular tower does). The view is rebuilt from this config at
    predict time, so an exported bundle renders rows exactly as training did."""
    name = "tabular_as_text"

    @dataclass(frozen=True)
    class Config:
        columns: Literal["categorical", "numeric", "all"] = "all"
        template: str = "{column}: {value}"
        drop_from_tabular: bool = False
        position: Literal["after", "before"] = "after"  # the fields after / before the free text

        def __post_init__(self):
            try:
                probe = self.template.format(column="\0", value="\1")
            except (KeyError, IndexError, ValueError) as e:
                raise ConfigError(f"tricks.tabular_as_text.template={self.template!r} is not a format string with only "
                                  f"{{column}} and {{value}} ({type(e).__name__}: {e}); e.g. '{{column}}: {{value}}'") from None
            if "\1" not in probe:
                raise ConfigError(f"tricks.tabular_as_text.template={self.template!r} never writes {{value}}; e.g. '{{column}}: {{value}}'")

    space = {"columns": {"choice": ["categorical", "numeric", "all"]}, "drop_from_tabular": {"choice": [False, True]},
             "position": {"choice": ["after", "before"]}}

    def configure_view(self, view):
        roles = ("categorical", "numeric") if self.config.columns == "all" else (self.config.columns,)
        # the columns the tabular tower reads, in table order
        columns = [c for c in view.schema.columns if view.schema.columns[c] in roles and c not in view.rendered
                   and (c in view.tabular.numeric or c in view.tabular.categorical)]
        if not columns:
            return view
        return view.with_rendered(columns, self.config.template, drop_from_tabular=self.config.drop_from_tabular,
                                  fields_first=self.config.position == "before")
