"""What the command line prints, and how: one place decides colours, widths and markup.

On a terminal, output is coloured and fitted to the window. Off a terminal (a pipe, a file, a CI
log) nothing is coloured, nothing is wrapped (a path cut at column 80 cannot be pasted), and tables
keep their full width, so `crm-fte … | grep` sees whole rows.
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

# Wide enough that no row of ours is ever cut; rich only uses the width it needs.
_PIPE_WIDTH = 10_000


def make_console(*, stderr: bool = False, markup: bool = True) -> Console:
    """A rich Console for stdout or stderr: styled on a terminal, plain and unwrapped off one."""
    probe = Console(stderr=stderr)
    if probe.is_terminal:
        return Console(stderr=stderr, highlight=False, markup=markup)
    return Console(stderr=stderr, highlight=False, markup=markup, width=_PIPE_WIDTH, soft_wrap=True, no_color=True)


def plain(text: str, style: str | None = None) -> Text:
    """`text` exactly as given: square brackets in it (e.g. `'pkg[embedded]'`) are not markup."""
    return Text(text, style=style or "")
