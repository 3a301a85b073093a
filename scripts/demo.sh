#!/usr/bin/env bash
# `make demo`: a hotline a softphone can call. The private PostgreSQL and Redis, the schema, the
# demo district, Kamailio (Debian's package, docker/kamailio/kamailio.cfg) as the PBX on
# 127.0.0.1, and the service registered with it. Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
hotline=.venv/bin/hotline
export HOTLINE_LOG_FORMAT=${HOTLINE_LOG_FORMAT:-console}
export HOTLINE_LOG_LEVEL=${HOTLINE_LOG_LEVEL:-info}
data_dir=${HOTLINE_DATA_DIR:-.hotline}
pbx=${HOTLINE_SIP_REGISTRAR:-127.0.0.1:5060}
export HOTLINE_SIP_REGISTRAR=$pbx
pbx_host=${pbx%:*}
pbx_port=${pbx##*:}

# Only what this script starts is stopped on exit, however it ends. `make demo 2>&1 | tee log`
# and Ctrl-C: tee dies with the Ctrl-C, and the first message written to the pipe after it
# raised SIGPIPE, which killed this script before it stopped PostgreSQL and Redis. So: every
# ending signal is trapped (INT, TERM, HUP, PIPE), the stopping comes before any message, the
# messages go to stderr and may fail; and a reaper in a session of its own (setsid: no Ctrl-C,
# no hang-up reaches it) stops the same things once this script is gone, even by SIGKILL.
started_services=""
kamailio_pid=""
demo_pid=$$
say() { echo "$@" >&2 2>/dev/null || true; }
stop_all() {
    trap '' INT TERM HUP PIPE  # stopping is not interrupted; children inherit the ignoring
    trap - EXIT
    set +e
    local stopped=""
    if [ -n "$kamailio_pid" ] && kill -0 "$kamailio_pid" 2>/dev/null; then
        kill -TERM -- "-$kamailio_pid" 2>/dev/null || kill -TERM "$kamailio_pid" 2>/dev/null
        stopped="Kamailio"
    fi
    if [ -n "$started_services" ]; then
        HOTLINE_LOG_LEVEL=warning $hotline services stop >/dev/null 2>&1 && stopped="${stopped:+$stopped, }PostgreSQL and Redis"
    fi
    [ -z "$stopped" ] || say "demo: stopped $stopped"
}
trap stop_all EXIT
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap 'stop_all; exit 129' HUP
trap 'stop_all; exit 141' PIPE

# The reaper: waits for this script to end, then stops what it started (a no-op when the trap
# did it already). It reads what to stop from a file this script fills in as it starts things.
reaper_state="$data_dir/demo-reaper.$$"
mkdir -p "$data_dir"
: >"$reaper_state"
setsid bash -c '
    state=$1; pid=$2; hotline=$3
    while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
    . "$state" 2>/dev/null
    if [ -n "${kamailio_pid:-}" ]; then kill -TERM -- "-$kamailio_pid" 2>/dev/null || kill -TERM "$kamailio_pid" 2>/dev/null; fi
    if [ -n "${started_services:-}" ]; then HOTLINE_LOG_LEVEL=warning "$hotline" services stop >/dev/null 2>&1; fi
    rm -f "$state"
' demo-reaper "$reaper_state" "$demo_pid" "$hotline" </dev/null >/dev/null 2>&1 &

if ! HOTLINE_LOG_LEVEL=warning $hotline services status >/dev/null 2>&1; then
    started_services=yes
    echo "started_services=yes" >>"$reaper_state"
fi
HOTLINE_LOG_LEVEL=warning $hotline services start >/dev/null
HOTLINE_LOG_LEVEL=warning $hotline migrate
# The seed (or, when already loaded, the roster in the database) says which clocks fall inside
# the roster: the banner suggests those rather than a fixed date a month-old roster has passed.
seed_out=$(HOTLINE_LOG_LEVEL=warning $hotline seed demo --if-missing)
printf '%s\n' "$seed_out" | grep -v '^try \|^the demo roster\|^console login ' || true
clock_hints=$(printf '%s\n' "$seed_out" | grep '^try \|^the demo roster' || true)
# The seed's console logins (web/accounts.py DEMO_LOGINS): the banner shows the first two.
console_logins=$(printf '%s\n' "$seed_out" | grep '^console login ' | head -2 | sed 's/^console login /  /' || true)

# The PBX stand-in. A SIP server already on the port (another Kamailio, Asterisk …) is not ours
# to stop; say so instead of failing later with a confusing registration error.
if .venv/bin/python - "$pbx_host" "$pbx_port" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(0)  # taken
sys.exit(1)
PY
then
    echo "demo: something already listens on udp $pbx; using it as the PBX (set HOTLINE_SIP_REGISTRAR to change)"
else
    mkdir -p "$data_dir/kamailio"
    kamailio=$(command -v kamailio || echo /usr/sbin/kamailio)
    # Kamailio writes its registrations to the hotline's database, so a phone that registers
    # is ringable at once (KAMAILIO_DBURL, and PGHOST for the private server's Unix socket).
    pbx_db=$(HOTLINE_LOG_LEVEL=warning $hotline pbx env)
    set -a
    eval "$pbx_db"
    set +a
    setsid "$kamailio" -f docker/kamailio/kamailio.cfg -l "udp:$pbx" -Y "$data_dir/kamailio" \
        -P "$data_dir/kamailio/kamailio.pid" -D -E -A "DBURL=\"$KAMAILIO_DBURL\"" \
        >"$data_dir/kamailio/kamailio.log" 2>&1 &
    kamailio_pid=$!
    echo "kamailio_pid=$kamailio_pid" >>"$reaper_state"
    sleep 0.5
    if ! kill -0 "$kamailio_pid" 2>/dev/null; then
        echo "demo: Kamailio did not start; its log:" >&2
        tail -20 "$data_dir/kamailio/kamailio.log" >&2
        exit 1
    fi
    echo "demo: Kamailio (the PBX) on udp $pbx, log in $data_dir/kamailio/kamailio.log"
fi

cat <<MSG

The demo district 滨海新区 is loaded (centers 北塘街, 寨上朝阳, 古林街).

Connect a softphone (Linphone, MicroSIP, baresip …) on this machine, no password:
  SIP server / domain   $pbx           (UDP)
  user                  1001           张桂兰's family doctor (北塘街一团队); 2001 is the assistant,
                                       3001/3002 北塘街's night duty doctors, 4001 its call-center agent
Then call the hotline from a second softphone account registered as 13800000001 (张桂兰),
or any number: dial  sip:${HOTLINE_SIP_USER:-hotline}@$pbx  — greeting, press 1, and the route decides who rings:
working days 08:00–17:00 (Asia/Shanghai, holidays and 调休 included) the own family doctor, then
the assistant, the center's agent and the district desk; otherwise the night duty doctor.
Each center has its own number too: 8001 北塘街, 8002 寨上朝阳, 8003 古林街.
Try another time of day (inside the seeded duty roster):
$clock_hints

The web console: http://127.0.0.1:${HOTLINE_WEB_PORT:-8080}/  — sign in as (工号 / 密码):
$console_logins
(more demo logins: a supervisor, a director, a night duty doctor, an agent — \`hotline seed demo --if-missing\` lists them)

Who answers 张桂兰 right now:
MSG
HOTLINE_LOG_LEVEL=warning $hotline route --caller 13800000001 ${HOTLINE_CLOCK_START:+--at "$HOTLINE_CLOCK_START"} || true
echo
echo "Recordings go to $data_dir/recordings. Ctrl-C stops the hotline (after the calls in progress; twice: now), Kamailio and the databases."
echo
# Not exec: the trap must run when the service exits.
$hotline serve
