# Sourced by run.sh and compare.sh: wait_quiet waits (up to 2 minutes) until
# less than QUIET_PCT (default 15) percent of the CPU was busy over a second.

# busy_pct prints the percentage of CPU time that was not idle over one second.
busy_pct() {
	local a b c d e f g h t1 i1
	read -r _ a b c d e f g h _ </proc/stat
	t1=$((a + b + c + d + e + f + g + h)) i1=$((d + e))
	sleep 1
	read -r _ a b c d e f g h _ </proc/stat
	echo $((100 * ((a + b + c + d + e + f + g + h - t1) - (d + e - i1)) / (a + b + c + d + e + f + g + h - t1 + 1)))
}

wait_quiet() {
	[ -r /proc/stat ] || return 0
	local busy
	for _ in $(seq 120); do
		busy=$(busy_pct)
		if [ "$busy" -lt "${QUIET_PCT:-15}" ]; then
			echo "machine ${busy}% busy" >&2
			return 0
		fi
	done
	echo "warning: the machine stayed ${busy}% busy; measuring anyway" >&2
}
