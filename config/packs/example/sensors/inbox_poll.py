"""Polling sensor: reports each new file in config.directory once.

Protocol (docs/sensor-protocol.md): one JSON line on stdin with sensor, trigger, config
and state; one JSON object per stdout line.
"""
import json
import os
import sys


def emit(obj):
    print(json.dumps(obj), flush=True)


def main():
    start = json.loads(sys.stdin.readline())
    directory = start["config"].get("directory", "inbox")
    state = start["state"] or {}
    seen = set(state.get("seen", []))

    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        emit({"log": f"{directory} does not exist yet", "level": "debug"})
        return

    current = set()
    for name in names:
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            continue
        current.add(name)
        if name not in seen:
            emit({"payload": {"name": name, "size": os.path.getsize(path), "directory": directory}})
    # Saved only after the events above are stored; files that went away are forgotten,
    # so a file that comes back is reported again.
    emit({"state": {"seen": sorted(current)}})


if __name__ == "__main__":
    main()
