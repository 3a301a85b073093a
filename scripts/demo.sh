#!/usr/bin/env bash
# `make demo`: the private PostgreSQL and Redis, the schema, the demo district, and a tour.
set -euo pipefail
cd "$(dirname "$0")/.."
hotline=.venv/bin/hotline
export HOTLINE_LOG_FORMAT=${HOTLINE_LOG_FORMAT:-console}
# The tour prints what each command found; its log lines would only repeat it.
export HOTLINE_LOG_LEVEL=${HOTLINE_LOG_LEVEL:-warning}

$hotline services start
$hotline migrate
$hotline seed demo --if-missing

monday=$(.venv/bin/python -c 'import datetime as d; t=d.date.today(); print(t + d.timedelta(days=(7 - t.weekday()) % 7 or 7))')
cat <<MSG

The demo district 滨海新区 is loaded (centers 北塘街, 寨上朝阳, 古林街).

Who answers 张桂兰 (13800000001) next Monday at 10:00, and at 21:00:
MSG
$hotline route --caller 13800000001 --at "${monday}T10:00"
$hotline route --caller 13800000001 --at "${monday}T21:00"
cat <<MSG

Try it yourself:
  .venv/bin/hotline residents list --center 北塘街
  .venv/bin/hotline residents show 13800000001 --reason demo
  .venv/bin/hotline route --caller 13800000001 --at "${monday}T07:59"

Not yet: the SIP service a softphone can call arrives with issue 3 (see README "What works today").
\`make stop\` stops the private PostgreSQL and Redis.
MSG
