"""The README's first command: a two-node failover on this machine, no cluster needed.

Builds two hosts and a client in network namespaces, starts an agent on each, shows the VIP
answering from n1, kills n1 (agent SIGKILL and cable pulled), and shows the VIP answering from
n2 with the client-observed gap. Removes everything it created.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from .lab import VIP, Lab, gap_after


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hacluster-demo", description=__doc__)
    p.add_argument("--keepalive", default="100ms")
    p.add_argument("--deadtime", default="500ms")
    p.add_argument("--media", default="ucast", choices=("ucast", "bcast", "serial", "ucast+serial"))
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        print("demo: needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    warntime = f"{int(a.deadtime.rstrip('ms')) // 2}ms" if a.deadtime.endswith("ms") else "1"
    with Lab(keepalive=a.keepalive, deadtime=a.deadtime, warntime=warntime, media=a.media) as lab:
        print(f"lab: namespaces {lab.prefix}-{{sw,h1,h2,h3}} (switch, n1, n2, client), VIP {VIP}, "
              f"media {a.media}, keepalive {a.keepalive}, deadtime {a.deadtime}")  # fmt: skip
        for node in ("n1", "n2"):
            lab.start_agent(node)
        lab.wait_for("n1", timeout=30)
        print(f"client: http://{VIP}:8080/ answered by n1")
        print(lab.hactl("n2", "status").stdout)
        probe = lab.probe(seconds=6.0)
        time.sleep(1.0)
        t0 = time.time()
        lab.kill_agent("n1", signal.SIGKILL)
        lab.cut("n1")
        print("n1: agent killed (SIGKILL) and its cable pulled")
        out, _ = probe.communicate(timeout=30)
        gap = gap_after(out.splitlines(), t0, "n2")
        if gap is None:
            print("FAILED: the VIP never answered from n2", file=sys.stderr)
            print(lab.agent_log("n2")[-3000:], file=sys.stderr)
            return 1
        print(f"client: VIP answered by n2 {gap:.0f} ms after n1 died (deadtime {a.deadtime})")
        print(lab.hactl("n2", "status").stdout)
    print("lab removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
