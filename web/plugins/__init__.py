"""Every capability of the console, one package each (http.py declares its routes).

Adding a page: a package here with an http.py holding `PLUGIN = Plugin(...)` and its templates
folder, listed below; the navigation, the route guard and the OpenAPI document follow from what
it declares.
"""

from __future__ import annotations

from web.plugins.admin.http import PLUGIN as ADMIN
from web.plugins.audit.http import PLUGIN as AUDIT
from web.plugins.auth.http import PLUGIN as AUTH
from web.plugins.board.http import PLUGIN as BOARD
from web.plugins.calls.http import PLUGIN as CALLS
from web.plugins.click_to_call.http import PLUGIN as CLICK_TO_CALL
from web.plugins.desk.http import PLUGIN as DESK
from web.plugins.handover.http import PLUGIN as HANDOVER
from web.plugins.promises.http import PLUGIN as PROMISES
from web.plugins.referrals.http import PLUGIN as REFERRALS
from web.plugins.reports.http import PLUGIN as REPORTS
from web.plugins.tasks.http import PLUGIN as TASKS
from web.registry import Plugin

PLUGINS: tuple[Plugin, ...] = (AUTH, DESK, TASKS, REFERRALS, HANDOVER, BOARD, CALLS, REPORTS, PROMISES, AUDIT, ADMIN,
                              CLICK_TO_CALL)
