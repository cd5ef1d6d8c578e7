#!/bin/bash
# Runs inside the deploy VM (systemd is PID 1), started by deploy-vm-check.service; see
# scripts/test-deploy-vm.sh. Writes "ok NAME" / "FAIL NAME" lines to out/checks.txt and
# key=value measurements to out/measure.txt on the host share.
set -u
H=/mnt/host
OUT=$H/out
BB=/opt/ble-bridge/.venv/bin/ble-bridge
PY=/opt/ble-bridge/.venv/bin/python
SOCK=/run/ble-bridge/control.sock
CG=/sys/fs/cgroup/system.slice/ble-bridge.service
: >"$OUT/checks.txt"
: >"$OUT/measure.txt"
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "[guest $(up)s] $*" >/dev/console; echo "[guest $(up)s] $*"; }
check() {  # check NAME COMMAND...: each NAME once (the host counts the lines)
  local name=$1
  shift
  if grep -q -x -F -e "ok   $name" -e "FAIL $name" "$OUT/checks.txt"; then
    echo "FAIL duplicate check name: $name" >>"$OUT/checks.txt"
    return
  fi
  if "$@"; then echo "ok   $name" >>"$OUT/checks.txt"; else
    echo "FAIL $name" >>"$OUT/checks.txt"
    say "FAIL $name"
  fi
}
measure() { echo "$1=$2" >>"$OUT/measure.txt"; say "measured $1=$2"; }
prop() { systemctl show -P "$2" "$1"; }
wait_for() {  # wait_for SECONDS COMMAND...: true once COMMAND is
  local end=$((SECONDS + $1))
  shift
  until "$@"; do
    [ $SECONDS -ge $end ] && return 1
    sleep 1
  done
}
is_active() { [ "$(prop ble-bridge ActiveState)" = active ]; }
restarted_from() { [ "$(prop ble-bridge NRestarts)" -gt "$1" ] && is_active; }
# adapters bluetoothd got from mgmt (btmgmt quits before its answer when stdin is /dev/null)
controllers() { busctl --system --list tree org.bluez 2>/dev/null | grep -c '^/org/bluez/hci[0-9]*$'; }
# wait_for runs its command again each second: the $(...) must be inside these, not in its arguments
two_controllers() { [ "$(controllers)" -ge 2 ]; }
no_controllers() { [ -z "$(ls /sys/class/bluetooth)" ]; }
snapshot() {  # what the install may touch; the boot's own files left out
  find /etc /opt /var/lib /usr/local /srv -xdev \( -path /var/lib/systemd -o -path /var/lib/bluetooth \
    -o -path /etc/machine-id -o -path /var/lib/dbus -o -path /etc/ld.so.cache \) -prune -o -print | sort
  sha256sum /etc/bluetooth/main.conf /etc/passwd /etc/group /etc/shadow /etc/gshadow
}
status_field() { "$BB" status --socket "$SOCK" --json 2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

say "systemd $(systemctl --version | head -1 | cut -d' ' -f2), kernel $(uname -r)"
check "systemd is PID 1" test "$(cat /proc/1/comm)" = systemd
check "booted (sd_booted)" test -d /run/systemd/system

# two controllers: btvirt started now that the boot is over; under TCG the kernel's first
# HCI Reset may time out before btvirt answers ("Opcode 0x0c03 failed: -110") and that
# controller never registers with mgmt: then stop btvirt and start it again (as the VM tier).
modprobe hci_vhci
systemctl start bluetooth
for try in 1 2 3 4 5; do
  systemctl start deploy-vm-btvirt
  wait_for 30 two_controllers && break
  say "try $try: $(controllers) of 2 controllers registered; restarting btvirt"
  systemctl stop deploy-vm-btvirt
  wait_for 30 no_controllers
done
measure btvirt_starts "$try"
check "two controllers registered" test "$(controllers)" -ge 2
if [ "$(controllers)" -lt 2 ]; then
  { systemctl status deploy-vm-btvirt; journalctl -b -u deploy-vm-btvirt --no-pager; btmgmt info
    lsmod; ls -l /dev/vhci; ls /sys/class/bluetooth; dmesg; } >"$OUT/btvirt-diag.txt" 2>&1
fi
check "bluetoothd active before install" systemctl is-active -q bluetooth

snapshot >"$OUT/before.txt"
check "no ble-bridge user before" bash -c '! id ble-bridge >/dev/null 2>&1'
gpio_before=$(getent group gpio >/dev/null && echo yes || echo no)

# --- install as a user would -----------------------------------------------------------------
say "install.sh --offline (pip under TCG takes a while)"
t0=$SECONDS
bash "$H/src/deploy/install.sh" --offline "$H/bundle" >"$OUT/install.log" 2>&1
rc=$?
measure install_s $((SECONDS - t0))
check "install.sh exits 0" test $rc -eq 0
check "install.sh defers nothing on a booted system" bash -c "! grep -q '^deferred:' '$OUT/install.log'"
t0=$SECONDS
check "ble-bridge.service active (Type=notify: READY=1 came)" wait_for 180 is_active
measure ready_s $((SECONDS - t0))
check "status over the control socket" wait_for 30 "$BB" status --socket "$SOCK" --json
"$BB" status --socket "$SOCK" >"$OUT/status.txt" 2>&1
check "STATUS= text reached systemd" test -n "$(prop ble-bridge StatusText)"
measure status_text "\"$(prop ble-bridge StatusText)\""
check "unit is Type=notify with WatchdogUSec=30s" test "$(prop ble-bridge Type) $(prop ble-bridge WatchdogUSec)" = "notify 30s"
pid=$(prop ble-bridge MainPID)
grep -E '^(Uid|Gid|Groups|NoNewPrivs|Seccomp|Seccomp_filters|CapInh|CapPrm|CapEff|CapBnd|CapAmb):' /proc/"$pid"/status >"$OUT/node-proc-status.txt"
check "node runs as ble-bridge" test "$(stat -c %U /proc/"$pid")" = ble-bridge
check "node has NoNewPrivs" grep -q '^NoNewPrivs:[[:space:]]*1' "$OUT/node-proc-status.txt"
check "node is under a seccomp filter" grep -q '^Seccomp:[[:space:]]*2' "$OUT/node-proc-status.txt"
check "node has an empty capability bounding set" grep -q '^CapBnd:[[:space:]]*0000000000000000' "$OUT/node-proc-status.txt"
check "node has the bluetooth group" bash -c "grep '^Groups:' '$OUT/node-proc-status.txt' | grep -qw $(getent group bluetooth | cut -d: -f3)"
check "node has the gpio group" bash -c "grep '^Groups:' '$OUT/node-proc-status.txt' | grep -qw $(getent group gpio | cut -d: -f3)"
check "no network drop-in by default" test ! -e /etc/systemd/system/ble-bridge.service.d/network.conf
check "state dir 0700 ble-bridge" test "$(stat -c '%a %U' /var/lib/ble-bridge)" = "700 ble-bridge"
# The properties bite here: probes with the unit's MemoryDenyWriteExecute / SystemCallFilter
# are refused what they forbid, and allowed it without them.
wx='import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)'
check "W+X mmap works without MemoryDenyWriteExecute" systemd-run -q --wait -p User=ble-bridge "$PY" -c "$wx"
check "W+X mmap refused under MemoryDenyWriteExecute" bash -c "! systemd-run -q --wait -p User=ble-bridge -p MemoryDenyWriteExecute=yes '$PY' -c '$wx' 2>/dev/null"
nice_call='import os; os.setpriority(os.PRIO_PROCESS, 0, 5)'   # setpriority is in @resources
check "setpriority works without the unit's SystemCallFilter" systemd-run -q --wait -p User=ble-bridge "$PY" -c "$nice_call"
check "setpriority refused (EPERM) under the unit's SystemCallFilter" bash -c "! systemd-run -q --wait -p User=ble-bridge -p SystemCallFilter=@system-service -p 'SystemCallFilter=~@privileged @resources' -p SystemCallErrorNumber=EPERM '$PY' -c '$nice_call' 2>/dev/null"

# --- a table, memory, watchdog ------------------------------------------------------------------
"$BB" table open vmtable --socket "$SOCK" --json >"$OUT/table-open.txt" 2>&1
check "table open over the control socket" test $? -eq 0
w1=$(prop ble-bridge WatchdogTimestampMonotonic)
for i in $(seq 12); do  # one minute, a sample every 5 s
  sleep 5
  echo "$(up) $(cat "$CG/memory.current")" >>"$OUT/memory.txt"
done
w2=$(prop ble-bridge WatchdogTimestampMonotonic)
check "WATCHDOG=1 pings reach systemd" test "$w2" -gt "$w1"
peak=$(cat "$CG/memory.peak" 2>/dev/null || sort -k2 -n "$OUT/memory.txt" | tail -1 | cut -d' ' -f2)
measure mem_peak_mib "$(awk -v b="$peak" 'BEGIN{printf "%.1f", b/1048576}')"
measure mem_current_mib "$(awk -v b="$(cat "$CG/memory.current")" 'BEGIN{printf "%.1f", b/1048576}')"
cp "$CG/memory.events" "$OUT/memory.events"
check "memory.high is 64M and memory.max 96M" test "$(cat "$CG/memory.high") $(cat "$CG/memory.max")" = "67108864 100663296"
check "never above MemoryHigh (memory.events high 0)" grep -qx 'high 0' "$CG/memory.events"
check "memory.peak under 64 MiB" test "$peak" -lt 67108864
measure table_sessions "\"$(status_field "[(s['name'], s['height']) for s in d['sessions']]" 2>&1 | tr -d '"')\""
check "node still active after a minute" is_active

# --- pairing with the real bluetoothd (node on hci0, "phone" on hci1) -------------------------
pair() {  # pair LABEL [--advertise]: one attempt from hci1; its outcome is measured
  local res
  res=$("$PY" "$H/pair.py" --node hci0 --phone hci1 "${@:2}" 2>>"$OUT/pair.log")
  echo "$1 $res" >>"$OUT/pair.log"
  measure "pair_$1" "$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("ok" if r["paired"] else r["error"])' "$res" 2>/dev/null || echo none)"
}
nodepairable() { busctl --system get-property org.bluez /org/bluez/hci0 org.bluez.Adapter1 Pairable; }
pairable_is() { [ "$(nodepairable)" = "b $1" ]; }
check "node adapter not pairable outside the window" test "$(nodepairable)" = "b false"
pair closed
check "pairing refused while the window is closed" bash -c "grep -q '^pair_closed=org.bluez.Error' '$OUT/measure.txt'"
busctl --system set-property org.bluez /org/bluez/hci0 org.bluez.Adapter1 Pairable b true
pair refused
check "pairing refused by our agent outside the window (pairable forced on)" bash -c "grep -q '^pair_refused=org.bluez.Error' '$OUT/measure.txt'"
busctl --system set-property org.bluez /org/bluez/hci0 org.bluez.Adapter1 Pairable b false
"$BB" pair --window 90 --socket "$SOCK" --json >"$OUT/pair-window.txt" 2>&1
check "pair --window opens" test $? -eq 0
check "node adapter pairable inside the window" wait_for 10 pairable_is true
pair open
check "pairing accepted inside the window" grep -qx 'pair_open=ok' "$OUT/measure.txt"
"$BB" pair --list --socket "$SOCK" --json >"$OUT/pair-list.txt" 2>&1
phone=$(busctl --system get-property org.bluez /org/bluez/hci1 org.bluez.Adapter1 Address | cut -d'"' -f2)
check "pair --list shows the bonded phone" grep -q "$phone" "$OUT/pair-list.txt"
"$BB" pair --remove "$phone" --socket "$SOCK" >>"$OUT/pair-list.txt" 2>&1
check "pair --remove drops the bond" bash -c "! '$BB' pair --list --socket '$SOCK' --json | grep -q '$phone'"
"$BB" pair --close --socket "$SOCK" >/dev/null 2>&1
check "node adapter not pairable after the window" wait_for 10 pairable_is false

# --- stop (SIGTERM), no agent, start ------------------------------------------------------------
systemctl stop ble-bridge
check "SIGTERM stop is clean (Result=success, status 0)" test "$(prop ble-bridge Result) $(prop ble-bridge ExecMainStatus)" = "success 0"
# the node's adverts are gone with it (and Discoverable alone makes an LE-only controller
# advertise nothing): pair.py registers an advertisement of its own on hci0 for the attempt
busctl --system set-property org.bluez /org/bluez/hci0 org.bluez.Adapter1 Pairable b true
pair no_agent --advertise
check "pairing refused with no agent registered" bash -c "grep -q '^pair_no_agent=org.bluez.Error' '$OUT/measure.txt'"
busctl --system set-property org.bluez /org/bluez/hci0 org.bluez.Adapter1 Pairable b false
systemctl start ble-bridge
check "started again" wait_for 120 is_active

# --- Restart= after kill -9; the watchdog after a stall ---------------------------------------
n0=$(prop ble-bridge NRestarts)
p0=$(prop ble-bridge MainPID)
kill -9 "$p0"
check "restarted after kill -9 (Restart=on-failure)" wait_for 150 restarted_from "$n0"
check "a new main process" test "$(prop ble-bridge MainPID)" != "$p0"
n1=$(prop ble-bridge NRestarts)
p1=$(prop ble-bridge MainPID)
kill -STOP "$p1"
check "stalled node (SIGSTOP) restarted by the watchdog" wait_for 180 restarted_from "$n1"
check "journal names the watchdog" bash -c "journalctl -b -u ble-bridge --no-pager | grep -qi 'watchdog timeout'"
measure restarts "$(prop ble-bridge NRestarts)"
check "no traceback in the node's journal" bash -c "! journalctl -b -u ble-bridge --no-pager -o cat | grep -q Traceback"
journalctl -b -u ble-bridge --no-pager -o short-monotonic >"$OUT/node-journal.txt"

# --- rerun of install.sh on the running system -------------------------------------------------
bt0=$(prop bluetooth MainPID)
bash "$H/src/deploy/install.sh" --offline "$H/bundle" >"$OUT/install2.log" 2>&1
check "install.sh rerun exits 0" test $? -eq 0
check "rerun keeps bluetoothd (main.conf unchanged)" test "$(prop bluetooth MainPID)" = "$bt0"
check "active after the rerun" wait_for 180 is_active

# --- uninstall, purge ---------------------------------------------------------------------------
bash "$H/src/deploy/uninstall.sh" >"$OUT/uninstall.log" 2>&1
check "uninstall.sh exits 0" test $? -eq 0
check "unit gone (LoadState not-found)" test "$(prop ble-bridge LoadState)" = not-found
check "no process of ble-bridge left" bash -c '! pgrep -u ble-bridge >/dev/null'
check "state dir and user kept without --purge" bash -c 'test -s /var/lib/ble-bridge/identity.key && id ble-bridge >/dev/null'
check "bluetoothd still active" systemctl is-active -q bluetooth
bash "$H/src/deploy/uninstall.sh" --purge >>"$OUT/uninstall.log" 2>&1
check "uninstall.sh --purge exits 0" test $? -eq 0
snapshot >"$OUT/after.txt"
diff "$OUT/before.txt" "$OUT/after.txt" >"$OUT/leftover.diff"
if [ "$gpio_before" = no ]; then  # install.sh created group gpio; uninstall keeps it (shared)
  grep -v -E '/etc/(group|gshadow)-?$' "$OUT/leftover.diff" | grep -E '^[<>]' >"$OUT/leftover-unexpected.diff"
else
  grep -E '^[<>]' "$OUT/leftover.diff" >"$OUT/leftover-unexpected.diff"
fi
check "purge leaves /etc /opt /var/lib /usr/local as before" test ! -s "$OUT/leftover-unexpected.diff"
say "done: $(grep -c '^ok' "$OUT/checks.txt") ok, $(grep -c '^FAIL' "$OUT/checks.txt") failed"
exit 0
