"""`OptionError`: an invalid argument of a library function, naming the argument.

Library functions check their own options once; the experiment layer translates an
`OptionError` into the config error naming the config key that set the option, so no rule
is written twice.
"""

from __future__ import annotations


class OptionError(ValueError):
    """An invalid value of the argument `option` (the message says why and what is valid)."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option
