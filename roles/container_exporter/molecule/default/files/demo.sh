# Demo service: uses a little CPU and memory at start, then idles. It is PID 1 of its container, which ignores
# signals without a handler, so SIGTERM is trapped: the process exits 3 and the restart policy starts it again.
trap 'exit 3' TERM
ballast=$(printf '%01000000d' 0)
i=0
while [ "$i" -lt 20000 ]; do i=$((i + 1)); done
while :; do sleep 1; done
