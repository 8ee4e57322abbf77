#!/usr/bin/env python3
"""Facts about process trees, read from /proc: the pids of a tree, CPU ticks,
RSS and open descriptors. Used by compare.sh (CPU per request, RSS per idle
connection) and by the soak harness (fds and RSS growth).

    proctree.py pids PID...   every pid of the trees rooted at PID..., one per line
    proctree.py cpu PID...    user + sys clock ticks of every process of those trees
    proctree.py cpu-split PID...  the same as two figures: user ticks, then sys ticks
    proctree.py rss PID...    the sum of the RSS (bytes) of every process of those trees
    proctree.py hz            clock ticks per second (for cpu)

A tree is a process and all its descendants alive now (found through the
parent pid in /proc/N/stat). Ticks of descendants that already exited and
were reaped are in their parent's cutime/cstime; `cpu` adds those too, so a
respawned worker's time is not lost once its parent has reaped it.
"""
import os
import sys


def _stat_fields(pid):
    """Fields of /proc/PID/stat after the command name (which may hold spaces
    and parentheses), so index 0 is the state; None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    end = data.rfind(b")")
    if end < 0:
        return None
    return data[end + 2:].split()


def parents():
    """pid -> ppid of every live process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = _stat_fields(name)
        if fields is None:
            continue
        out[int(name)] = int(fields[1])
    return out


def tree(roots):
    """Every live pid in the trees rooted at roots (the roots first)."""
    ppid = parents()
    children = {}
    for pid, parent in ppid.items():
        children.setdefault(parent, []).append(pid)
    seen = []
    todo = [r for r in roots if r in ppid]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(children.get(pid, []))
    return seen


def cpu_split(pid):
    """(utime + cutime, stime + cstime) of one process, in clock ticks ((0, 0) if gone)."""
    f = _stat_fields(pid)
    if f is None:
        return 0, 0
    # after the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    return int(f[11]) + int(f[13]), int(f[12]) + int(f[14])


def cpu_ticks(pid):
    """utime + stime + cutime + cstime of one process, in clock ticks (0 if gone)."""
    return sum(cpu_split(pid))


def rss_bytes(pid):
    """Resident set size of one process in bytes (0 if gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            resident = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return resident * os.sysconf("SC_PAGE_SIZE")


def fd_count(pid):
    """Open descriptors of one process (None if gone or not readable)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def main(argv):
    if len(argv) < 2 or argv[1] not in ("pids", "cpu", "cpu-split", "rss", "hz"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    if argv[1] == "hz":
        print(os.sysconf("SC_CLK_TCK"))
        return 0
    try:
        roots = [int(a) for a in argv[2:]]
    except ValueError:
        print("proctree.py: pids must be numbers", file=sys.stderr)
        return 2
    pids = tree(roots)
    if argv[1] == "pids":
        for p in pids:
            print(p)
    elif argv[1] == "cpu":
        print(sum(cpu_ticks(p) for p in pids))
    elif argv[1] == "cpu-split":
        split = [cpu_split(p) for p in pids]
        print(sum(u for u, _ in split), sum(s for _, s in split))
    else:
        print(sum(rss_bytes(p) for p in pids))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
