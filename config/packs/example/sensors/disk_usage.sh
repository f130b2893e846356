# Polling sensor in POSIX sh: one JSON line per event on stdout (docs/sensor-protocol.md).
# It needs nothing from the start line on stdin, so it does not read it.
df -P / | awk 'NR == 2 {
    used = $5; sub("%", "", used)
    printf "{\"payload\": {\"mount\": \"%s\", \"used_percent\": %d}}\n", $6, used
}'
