#!/usr/bin/env bash
# Runs the issue 9 comparisons: the raw-echo baseline and the PlayHouse
# engine side by side, in one run, on this machine (docs/benchmarks.md).
#
#   hack/bench-compare.sh [OUTDIR] [SECTION...]
#
# SECTION is any of echo echo-paced echo-shared connect broadcast idle
# idle-parked scaling echo-client (default: all but echo-client and
# idle-parked).
# Both servers are started once (`playhouse-bench --serve raw` and
# `--serve playhouse --app relay`, which echoes requests and relays one-way
# packets) pinned to CPU 0 with taskset; the load runs pinned to CPU 1. Each
# comparison runs baseline then engine, and repeats (ROUNDS, default 2), so
# that drifting background load hits both. Every run's JSON summary is kept in
# OUTDIR (default /tmp/playhouse-bench-compare) and one line per run is
# printed. Keep runs short: the machine may be shared.
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=${1:-/tmp/playhouse-bench-compare}
shift || true
SECTIONS=${*:-echo echo-paced echo-shared connect broadcast idle scaling}
ROUNDS=${ROUNDS:-2}
ECHO_SECONDS=${ECHO_SECONDS:-10s}
mkdir -p "$OUT" bin
go build -o bin/ ./cmd/playhouse-bench
B=bin/playhouse-bench

SRV="" LOAD=""
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
	SRV="taskset -c 0" LOAD="taskset -c 1"
fi

# Servers: raw on 1700x, engine on 1701x; control endpoints on 17009/17019.
$SRV $B --serve raw --addr 127.0.0.1:17001 --ws-addr 127.0.0.1:17002 --tls-addr 127.0.0.1:17003 \
	--wss-addr 127.0.0.1:17004 --control-addr 127.0.0.1:17009 >"$OUT/raw.serving" 2>"$OUT/raw.log" &
RAW_PID=$!
$SRV $B --serve playhouse --app relay --addr 127.0.0.1:17011 --ws-addr 127.0.0.1:17012 --tls-addr 127.0.0.1:17013 \
	--wss-addr 127.0.0.1:17014 --control-addr 127.0.0.1:17019 >"$OUT/playhouse.serving" 2>"$OUT/playhouse.log" &
PH_PID=$!
trap 'kill $RAW_PID $PH_PID 2>/dev/null; wait $RAW_PID $PH_PID 2>/dev/null || true' EXIT
for f in raw playhouse; do
	for _ in $(seq 100); do grep -q serving "$OUT/$f.serving" && break; sleep 0.1; done
	grep serving "$OUT/$f.serving"
done
CA_RAW=$(sed -n 's/.* ca=\([^ ]*\) .*/\1/p' "$OUT/raw.serving")
CA_PH=$(sed -n 's/.* ca=\([^ ]*\) .*/\1/p' "$OUT/playhouse.serving")

# port <server> <transport>
port() {
	local base=17001
	[ "$1" = playhouse ] && base=17011
	case $2 in tcp) echo $base ;; ws) echo $((base + 1)) ;; tls) echo $((base + 2)) ;; wss) echo $((base + 3)) ;; esac
}

# bench <name> <server> <transport> <args...>: one run, JSON to OUT/name.json.
bench() {
	local name=$1 srv=$2 tr=$3
	shift 3
	local ctl=http://127.0.0.1:17009 ca=$CA_RAW
	if [ "$srv" = playhouse ]; then ctl=http://127.0.0.1:17019 ca=$CA_PH; fi
	# Collect the garbage of earlier runs first, so that no run pays for it.
	curl -fsS "$ctl/snapshot?gc=1" >/dev/null || true
	$LOAD $B --addr 127.0.0.1:"$(port "$srv" "$tr")" --transport "$tr" --ca "$ca" --control $ctl \
		--json --progress 0 "$@" >"$OUT/$name.json" 2>>"$OUT/load.log"
	printf '%-40s %s\n' "$name" "$(jq -c 'del(.before, .after)' "$OUT/$name.json")"
}

for section in $SECTIONS; do
	case $section in
	echo) # closed loop, 1,000 sessions, one 64-byte request in flight each (light client)
		for r in $(seq "$ROUNDS"); do
			for tr in tcp ws; do
				for srv in raw playhouse; do
					bench "echo-$tr-$srv-$r" $srv $tr --light --sessions 1000 --inflight 1 --payload 64 \
						--duration "$ECHO_SECONDS" --connect-rate 5000 --source-ips 4
				done
			done
		done ;;
	echo-paced) # the same 1,000 sessions at a fixed offered load (60 requests/s each, 60,000/s in all),
		# which neither server saturates: server CPU per echo at equal work
		for r in $(seq "$ROUNDS"); do
			for tr in tcp ws; do
				for srv in raw playhouse; do
					bench "echo-paced-$tr-$srv-$r" $srv $tr --rate 60 --sessions 1000 --inflight 1 --payload 64 \
						--duration "$ECHO_SECONDS" --connect-rate 5000 --source-ips 4
				done
			done
		done ;;
	echo-shared) # the echo section with both servers loaded at once (each its own load, both
		# loads on the load CPU): the two servers share CPU 0 at the same moments, so the
		# host's drift (other tenants, frequency) hits both alike; the absolute figures are
		# lower (the servers evict each other's cache), the ratio is steadier
		for r in $(seq "$ROUNDS"); do
			for tr in tcp ws; do
				loads=""
				for srv in raw playhouse; do
					bench "echo-shared-$tr-$srv-$r" $srv $tr --light --sessions 1000 --inflight 1 --payload 64 \
						--duration "$ECHO_SECONDS" --connect-rate 5000 --source-ips 4 &
					loads="$loads $!"
				done
				wait $loads
			done
		done ;;
	echo-client) # the same with pkg/client as the load (heavier per request on the load side)
		for r in $(seq "$ROUNDS"); do
			for tr in tcp ws; do
				for srv in raw playhouse; do
					bench "echo-client-$tr-$srv-$r" $srv $tr --sessions 1000 --inflight 1 --payload 64 \
						--duration "$ECHO_SECONDS" --connect-rate 5000
				done
			done
		done ;;
	connect) # connect + authenticate + close, 8 loops
		for r in $(seq "$ROUNDS"); do
			for srv in raw playhouse; do
				bench "connect-tcp-$srv-$r" $srv tcp --mode connect --sessions 8 --duration 10s --source-ips 32
			done
		done ;;
	broadcast) # 256 bytes to a 1,000-member stage, 500 times
		for r in $(seq "$ROUNDS"); do
			for srv in raw playhouse; do
				bench "broadcast-tcp-$srv-$r" $srv tcp --mode broadcast --sessions 1000 --payload 256 \
					--broadcasts 500 --connect-rate 5000 --source-ips 4
			done
		done ;;
	idle-parked) # the same once the engine's readers have parked (limits.idlePark, 5s by default);
		# the baseline beside it again, in the same run
		for tr in tcp tls; do
			bench "idle10k-$tr-raw-p" raw $tr --mode idle --sessions 10000 --connect-rate 5000 --source-ips 4
			bench "idle10k-$tr-playhouse-parked" playhouse $tr --mode idle --parked --sessions 10000 --connect-rate 5000 --source-ips 4
		done
		bench "idle10k-burst-tcp-raw-p" raw tcp --mode idle --sessions 10000 --connect-rate 5000 \
			--source-ips 4 --burst 20 --payload 1024
		bench "idle10k-burst-tcp-playhouse-parked" playhouse tcp --mode idle --parked --sessions 10000 --connect-rate 5000 \
			--source-ips 4 --burst 20 --payload 1024 ;;
	idle) # 10,000 idle authenticated sessions on every transport, measured as soon as the
		# server counts them (before limits.idlePark); then after a burst
		for tr in tcp tls ws wss; do
			for srv in raw playhouse; do
				bench "idle10k-$tr-$srv" $srv $tr --mode idle --sessions 10000 --connect-rate 5000 --source-ips 4
			done
		done
		for tr in tcp ws; do
			for srv in raw playhouse; do
				bench "idle10k-burst-$tr-$srv" $srv $tr --mode idle --sessions 10000 --connect-rate 5000 \
					--source-ips 4 --burst 20 --payload 1024
			done
		done ;;
	scaling) # per-session cost as the count grows
		for n in 1000 5000 10000 18000; do
			for tr in tcp ws; do
				for srv in raw playhouse; do
					bench "scale-$n-$tr-$srv" $srv $tr --mode idle --sessions $n --connect-rate 5000 --source-ips 8
				done
			done
		done ;;
	*) echo "unknown section $section" >&2; exit 2 ;;
	esac
done

# Echo sections: engine / baseline echoes per server CPU-second, round by
# round (each round ran the two back to back), and the median over the rounds.
for section in $SECTIONS; do
	case $section in echo | echo-paced | echo-shared | echo-client) ;; *) continue ;; esac
	for tr in tcp ws; do
		ratios=""
		for r in $(seq "$ROUNDS"); do
			raw="$OUT/$section-$tr-raw-$r.json" ph="$OUT/$section-$tr-playhouse-$r.json"
			[ -s "$raw" ] && [ -s "$ph" ] || continue
			ratios="$ratios $(jq -n --slurpfile a "$raw" --slurpfile b "$ph" \
				'$b[0].requestsPerServerCpuSecond / $a[0].requestsPerServerCpuSecond * 1000 | round / 1000')"
		done
		[ -n "$ratios" ] || continue
		printf '%-40s rounds:%s  median: %s\n' "$section-$tr engine/baseline" "$ratios" \
			"$(printf '%s\n' $ratios | sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}')"
	done
done
