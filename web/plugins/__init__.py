"""Every capability of the console, one package each (http.py declares its routes).

The order is the order of the navigation bar where two items share a position.
"""

from __future__ import annotations

from web.plugins.auth.http import PLUGIN as AUTH
from web.plugins.calls.http import PLUGIN as CALLS
from web.registry import Plugin

PLUGINS: tuple[Plugin, ...] = (AUTH, CALLS)
