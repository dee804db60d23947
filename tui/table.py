"""A light table for aggregates and pages of rows.

Textual's DataTable renders every visible cell through Rich (~0.2-0.5 ms a cell here), so a
page of 40 rows x 9 columns stalled the UI for 60-150 ms at each refresh. This table takes
cells already formatted as text, lays them out at fixed widths and builds each line from a
handful of segments (microseconds), which keeps a refresh far below a frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

Cell = str | Text


@dataclass(frozen=True)
class Fit:
    """How a table wider than its box keeps its key columns whole: first the secondary
    columns in `squeeze` are cut (name -> the narrowest it may get; text ends in "…", a
    column in `keep_end` loses its start instead, for trends whose newest point is last),
    then the columns in `drop` are hidden, first listed first. Other columns are never cut;
    if they alone are too wide the table scrolls sideways."""

    squeeze: Mapping[str, int] = field(default_factory=dict)
    drop: Sequence[str] = ()
    keep_end: frozenset[str] = frozenset()
    # Hide every `drop` column before cutting any `squeeze` one (labels that must stay whole
    # where they fit).
    drop_first: bool = False


def fit_widths(names: Sequence[str], widths: Sequence[int], room: int,
               fit: Fit) -> list[int | None]:
    """The width of each column in `room` cells (None: hidden); 2 cells of padding each."""
    for k in range(len(fit.drop) + 1):
        hidden = set(fit.drop[:k])
        out: list[int | None] = [None if n in hidden else w for n, w in zip(names, widths)]
        excess = sum(w + 2 for w in out if w is not None) - room
        # Cut the squeezable columns, the widest first, one cell at a time.
        while excess > 0 and (not fit.drop_first or k == len(fit.drop)):
            cuttable = [i for i, n in enumerate(names)
                        if (w := out[i]) is not None and w > fit.squeeze.get(n, 1 << 30)]
            if not cuttable:
                break
            i = max(cuttable, key=lambda j: (out[j] or 0) - fit.squeeze[names[j]])
            out[i] = (out[i] or 0) - 1
            excess -= 1
        if excess <= 0 or k == len(fit.drop):
            return out
    raise AssertionError("unreachable")


def cut(text: str, width: int, keep_end: bool = False) -> str:
    """`text` in at most `width` cells: the end kept (no mark), or the start with "…"."""
    if len(text) <= width:
        return text
    if keep_end:
        return text[len(text) - width:]
    return text[:max(width - 1, 0)] + "…"


class Table(ScrollView, can_focus=True):
    """Rows of text cells with a header and a row cursor. `enter` selects the cursor row."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"table--header", "table--cursor",
                                             "table--cursor-blurred"}
    DEFAULT_CSS = """
    Table { height: 1fr; }
    Table > .table--header { text-style: bold; color: $text-accent; }
    Table > .table--cursor { background: $block-cursor-background;
                             color: $block-cursor-foreground; text-style: bold; }
    Table > .table--cursor-blurred { background: $block-cursor-blurred-background; }
    """
    # j/k and g/G as in vi, less, k9s and lazygit; the arrows, page and home/end keys too.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select", "Select the row", show=False, id="table.select"),
        Binding("up,k", "move(-1)", "Row up", show=False, id="table.up"),
        Binding("down,j", "move(1)", "Row down", show=False, id="table.down"),
        Binding("pageup,ctrl+b", "page(-1)", "Page up", show=False, id="table.page_up"),
        Binding("pagedown,ctrl+f", "page(1)", "Page down", show=False, id="table.page_down"),
        Binding("home,g", "move(-1000000000)", "First row", show=False, id="table.first"),
        Binding("end,G", "move(1000000000)", "Last row", show=False, id="table.last"),
        Binding("left,h", "scroll_left", "Scroll left", show=False, id="table.scroll_left"),
        Binding("right,l", "scroll_right", "Scroll right", show=False,
                id="table.scroll_right"),
    ]

    cursor_row: reactive[int] = reactive(0)

    class RowHighlighted(Message):
        def __init__(self, table: Table, row: int, key: str | None) -> None:
            super().__init__()
            self.table, self.row, self.key = table, row, key

        @property
        def control(self) -> Table:
            return self.table

    class RowSelected(RowHighlighted):
        pass

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.columns: list[str] = []
        self._rows: list[tuple[Cell, ...]] = []
        self._keys: list[str | None] = []
        self._widths: list[int] = []
        self._right: list[bool] = []
        self.fit = Fit()
        self._shown: list[int | None] = []  # the widths drawn (None: hidden), for _room
        self._room = -1

    # --- data ----------------------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self._rows)

    def set_rows(self, columns: Sequence[str], rows: Sequence[Sequence[Cell]],
                 keys: Sequence[str | None] | None = None, fit: Fit | None = None) -> None:
        """Replace the content; the cursor stays on the same row index when it still exists.
        A column whose cells are all right-justified Text is right-aligned, header included.
        `fit`: which columns give way when the box is narrower than the rows."""
        if fit is not None:
            self.fit = fit
        self.columns = list(columns)
        self._rows = [tuple(r) for r in rows]
        self._keys = list(keys) if keys is not None else [None] * len(self._rows)
        self._widths = [len(c) for c in self.columns]
        self._right = [bool(self._rows) for _ in self.columns]
        for row in self._rows:
            for i, cell in enumerate(row):
                text = cell.plain if isinstance(cell, Text) else cell
                if len(text) > self._widths[i]:
                    self._widths[i] = len(text)
                if not (isinstance(cell, Text) and cell.justify == "right"):
                    self._right[i] = False
        self._room = -1
        self._layout()
        cursor = min(self.cursor_row, max(len(self._rows) - 1, 0))
        if cursor != self.cursor_row:
            self.cursor_row = cursor
        else:
            self._highlighted()
        self.refresh()

    def _layout(self) -> None:
        """Fit the columns to the box width (again when it changed)."""
        room = self.scrollable_content_region.width or self.size.width
        if room == self._room:
            return
        self._room = room
        self._shown = fit_widths(self.columns, self._widths, room, self.fit) if room > 0 \
            else list(self._widths)
        width = sum(w + 2 for w in self._shown if w is not None)
        self.virtual_size = Size(width, len(self._rows) + 1)

    def on_resize(self) -> None:
        self._layout()

    @property
    def shown_columns(self) -> list[str]:
        """The columns on screen now (a narrow box hides some, see Fit)."""
        return [c for c, w in zip(self.columns, self._shown) if w is not None]

    def get_row_at(self, index: int) -> list[str]:
        return [c.plain if isinstance(c, Text) else c for c in self._rows[index]]

    def key_at(self, index: int) -> str | None:
        return self._keys[index] if 0 <= index < len(self._keys) else None

    @property
    def cursor_key(self) -> str | None:
        return self.key_at(self.cursor_row) if self._rows else None

    # --- cursor --------------------------------------------------------------------------------

    def watch_cursor_row(self, row: int) -> None:
        if not self._rows:
            return
        # Keep the cursor visible below the header line.
        top = self.scroll_offset.y
        visible = max(1, self.size.height - 1)
        if row < top:
            self.scroll_to(y=row, animate=False)
        elif row >= top + visible:
            self.scroll_to(y=row - visible + 1, animate=False)
        self._highlighted()
        self.refresh()

    def _highlighted(self) -> None:
        if self._rows:
            self.post_message(self.RowHighlighted(self, self.cursor_row, self.cursor_key))

    def action_move(self, step: int) -> None:
        if self._rows:
            self.cursor_row = min(max(self.cursor_row + step, 0), len(self._rows) - 1)

    def action_page(self, step: int) -> None:
        self.action_move(step * max(1, self.size.height - 2))

    def action_select(self) -> None:
        if self._rows:
            self.post_message(self.RowSelected(self, self.cursor_row, self.cursor_key))

    def on_click(self, event: events.Click) -> None:
        row = event.y - 1 + self.scroll_offset.y
        if 0 <= row < len(self._rows) and event.y >= 1:
            self.cursor_row = row
            if event.chain == 2:
                self.action_select()

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    # --- rendering -----------------------------------------------------------------------------

    def _line(self, cells: Sequence[Cell], base: Style, header: bool = False) -> list[Segment]:
        segments = []
        for i, cell in enumerate(cells):
            width = self._shown[i] if i < len(self._shown) else self._widths[i]
            if width is None:
                continue
            text, style = cell.plain if isinstance(cell, Text) else cell, base
            if isinstance(cell, Text):
                if cell.style and not header:
                    style = base + (Style.parse(cell.style) if isinstance(cell.style, str)
                                    else cell.style)
            text = cut(text, width, self.columns[i] in self.fit.keep_end)
            padded = text.rjust(width) if self._right[i] else text.ljust(width)
            segments.append(Segment(f" {padded} ", style))
        return segments

    def render_line(self, y: int) -> Strip:
        self._layout()  # a scrollbar that came or went changes the room without a resize
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        base = self.rich_style
        if y == 0:
            segments = self._line(self.columns,
                                  base + self.get_component_rich_style("table--header"),
                                  header=True)
        else:
            row = y - 1 + scroll_y
            if row >= len(self._rows):
                return Strip.blank(width, base)
            style = base
            if row == self.cursor_row:
                style = base + self.get_component_rich_style(
                    "table--cursor" if self.has_focus else "table--cursor-blurred")
            segments = self._line(self._rows[row], style)
        strip = Strip(segments).crop(scroll_x, scroll_x + width)
        return strip.extend_cell_length(width, base)
