"""Run a command and report its own resource use (it must not be the parent of the
profiled process, or that process's use is counted too): `cpu_s wall_s maxrss_kib`.
usage: python3 rusage.py OUTFILE COMMAND [ARGS...]"""

import os
import subprocess
import sys
import time

start = time.monotonic()
proc = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, status, ru = os.wait4(proc.pid, 0)
wall = time.monotonic() - start
with open(sys.argv[1], "w") as out:
    out.write(f"{ru.ru_utime + ru.ru_stime:.3f} {wall:.3f} {ru.ru_maxrss}\n")
sys.exit(os.waitstatus_to_exitcode(status) if status else 0)
