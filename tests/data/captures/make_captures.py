#!/usr/bin/env python3
"""Regenerate the packet captures of two real Heartbeat 3.0.6 daemons (needs root).

    cd /work/main && .venv/bin/python tests/data/captures/make_captures.py [SET ...]

Each set directory gets NNN.bin (one UDP payload or one serial frame each, in capture order),
index.tsv (one line per file) and meta.json (exact ha.cf / authkeys / haresources per node).
UDP is captured with tcpdump in the switch namespace on the ports' *egress* (``-i any -Q out``),
i.e. what each daemon actually received from the other (a frame dropped on purpose by a cut is
not in the capture; a node's own bcast copy, delivered locally, is not on the wire either).
Serial frames are taken from the pty relay between the two daemons.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from tests.support import netns  # noqa: E402
from tests.support.realheartbeat import (  # noqa: E402
    RealHeartbeat,
    SerialNullModem,
    authkeys_text,
    ha_cf_text,
    start_all,
)

HERE = Path(__file__).resolve().parent
Auth = Literal["crc", "md5", "sha1"]
KEYS: dict[str, str] = {"crc": "", "md5": "hacluster-md5-key", "sha1": "hacluster-sha1-key"}
NODES = ("hb1", "hb2")
VIP_GROUP = "hb1 IPaddr2::192.0.2.100/24/eth0\n"


@dataclass
class Packet:
    t: float
    direction: str  # "hb1->hb2" / "hb2->hb1"
    src: str
    dst: str
    data: bytes


# ----------------------------------------------------------------------------------------------
# pcap


def read_pcap(path: Path) -> list[tuple[float, str, str, bytes]]:
    """(time, src ip:port, dst ip:port, udp payload) of every IPv4/UDP packet in a pcap file."""
    raw = path.read_bytes() if path.exists() else b""
    if len(raw) < 24:
        return []
    magic = struct.unpack_from("<I", raw)[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
    linktype = struct.unpack_from(endian + "I", raw, 20)[0]
    out = []
    off = 24
    while off + 16 <= len(raw):
        sec, frac, incl, _ = struct.unpack_from(endian + "IIII", raw, off)
        off += 16
        if off + incl > len(raw):
            break
        frame = raw[off : off + incl]
        off += incl
        if linktype == 1:  # Ethernet
            proto, l3 = struct.unpack_from(">H", frame, 12)[0], 14
        elif linktype == 113:  # Linux SLL
            proto, l3 = struct.unpack_from(">H", frame, 14)[0], 16
        elif linktype == 276:  # Linux SLL2
            proto, l3 = struct.unpack_from(">H", frame, 0)[0], 20
        else:
            raise ValueError(f"unsupported pcap link type {linktype}")
        if proto != 0x0800:
            continue
        ihl = (frame[l3] & 0x0F) * 4
        if frame[l3 + 9] != 17:
            continue
        src_ip = ".".join(str(b) for b in frame[l3 + 12 : l3 + 16])
        dst_ip = ".".join(str(b) for b in frame[l3 + 16 : l3 + 20])
        l4 = l3 + ihl
        sport, dport, ulen = struct.unpack_from(">HHH", frame, l4)
        payload = frame[l4 + 8 : l4 + ulen]
        t = sec + frac / (1e9 if nano else 1e6)
        out.append((t, f"{src_ip}:{sport}", f"{dst_ip}:{dport}", payload))
    return out


# ----------------------------------------------------------------------------------------------
# message field sniffing (for index.tsv and for waiting; not a decoder)


def field(data: bytes, name: str) -> str:
    if data.startswith(b"###\n"):
        m = re.search(rb"\d+:\(0\)" + name.encode() + rb"=([^,]*),", data)
    else:
        m = re.search(rb"(?m)^" + name.encode() + rb"=(.*)$", data)
    return "" if m is None else m.group(1).decode("ascii", "replace")


def types_from(packets: list[Packet], src: str) -> set[str]:
    return {field(p.data, "t") for p in packets if field(p.data, "src") == src}


# ----------------------------------------------------------------------------------------------


def run_set(
    name: str,
    medium: Literal["ucast", "bcast", "serial"],
    auth: Auth,
    *,
    haresources: str = "",
    rexmit: bool = False,
    auto_failback: str = "on",
    hb1_late: bool = False,
) -> None:
    outdir = HERE / name
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    keys = authkeys_text(auth, KEYS[auth])
    with netns.network(2) as net:
        hosts = {"hb1": net[0], "hb2": net[1]}
        ip_to_node = {h.ip: n for n, h in hosts.items()}
        modem: SerialNullModem | None = None
        tcpdump: netns.NsProcess | None = None
        pcap = net.workdir / "cap.pcap"
        cfs: dict[str, str] = {}
        for node, peer in (("hb1", "hb2"), ("hb2", "hb1")):
            if medium == "serial":
                if modem is None:
                    modem = SerialNullModem()
                media = [f"serial {modem.paths[0 if node == 'hb1' else 1]}"]
            elif medium == "ucast":
                media = [f"ucast eth0 {hosts[peer].ip}"]
            else:
                media = ["bcast eth0"]
            cfs[node] = ha_cf_text(
                nodes=NODES,
                media=media,
                keepalive="2",
                deadtime="10",
                initdead="20",
                baud=19200 if medium == "serial" else None,
                auto_failback=auto_failback,
            )
        if medium != "serial":
            tcpdump = net.spawn(
                net.switch_ns,
                ["tcpdump", "-i", "any", "-Q", "out", "-U", "-n", "-s", "0", "-w", str(pcap), "udp port 694"],
                log_name="tcpdump.log",
            )
            netns.wait_until(lambda: "listening on" in tcpdump.output(), 10, message="tcpdump to listen")

        def packets() -> list[Packet]:
            if modem is not None:
                return [
                    Packet(
                        t,
                        "hb1->hb2" if d == 0 else "hb2->hb1",
                        "serial:hb1" if d == 0 else "serial:hb2",
                        "serial:hb2" if d == 0 else "serial:hb1",
                        data,
                    )
                    for t, d, data in modem.frames()
                ]
            pkts = []
            for t, src, dst, data in read_pcap(pcap):
                s_node = ip_to_node.get(src.split(":")[0], "?")
                d_node = "hb2" if s_node == "hb1" else "hb1"
                pkts.append(Packet(t, f"{s_node}->{d_node}", src, dst, data))
            return pkts

        def wait_types(node: str, wanted: set[str], timeout: float) -> None:
            netns.wait_until(
                lambda: wanted <= types_from(packets(), node),
                timeout,
                interval=0.2,
                message=f"{node} to send {sorted(wanted)}",
            )

        hbs = {n: RealHeartbeat(hosts[n].ns, n, cfs[n], keys, haresources) for n in NODES}
        steps: list[str] = []
        t0 = time.monotonic()

        def step(text: str) -> None:
            steps.append(f"+{time.monotonic() - t0:6.2f}s {text}")
            print(f"  [{name}] {steps[-1]}", flush=True)

        try:
            if hb1_late:
                step("start hb2 alone")
                start_all([hbs["hb2"]])
                netns.wait_until(
                    lambda: "192.0.2.100" in net.run(hosts["hb2"], ["ip", "-4", "addr"]).stdout,
                    60,
                    message="hb2 to take hb1's group after initdead",
                )
                step("hb2 holds hb1's group; start hb1")
                start_all([hbs["hb1"]])
            else:
                step("start hb1 and hb2 together")
                start_all(list(hbs.values()))
            hbs["hb1"].wait_node_status("hb2", "active", 30)
            hbs["hb2"].wait_node_status("hb1", "active", 30)
            step("both see the other active")
            for n in NODES:
                hbs[n].wait_for_log(r"Initial resource acquisition complete", 40)
                if auto_failback != "legacy":  # legacy (nice_failback off) sends none
                    wait_types(n, {"resource"}, 20)
            if haresources:
                netns.wait_until(
                    lambda: "192.0.2.100" in net.run(hosts["hb1"], ["ip", "-4", "addr"]).stdout,
                    30,
                    message="VIP on hb1",
                )
            step("initial resource acquisition complete on both")
            if rexmit:
                mark = hbs["hb1"].log_size()
                if medium == "serial":
                    assert modem is not None
                    modem.cut("b_to_a")
                else:
                    net.cut(hosts["hb2"], direction="egress", udp_port=694)
                step("cut hb2 -> hb1")
                # lose about two of hb2's statuses (keepalive 2 s), less than warntime (5 s);
                # "Late heartbeat" is only logged when the next one arrives, so just wait
                time.sleep(4.5)
                if medium == "serial":
                    assert modem is not None
                    modem.restore()
                else:
                    net.restore(hosts["hb2"])
                step("restored")
                hbs["hb1"].wait_for_log(r"No pkts missing from hb2", 15, since=mark)
                wait_types("hb1", {"NS_rexmit"}, 10)
                step("hb1 requested and got retransmissions")
            wait_types("hb1", {"NS_ackmsg"}, 30)
            wait_types("hb2", {"NS_ackmsg"}, 30)
            step("both sent NS_ackmsg")
            if auto_failback != "legacy":  # "Standby mode only implemented when nice_failback on"
                mark1, mark2 = hbs["hb1"].log_size(), hbs["hb2"].log_size()
                hbs["hb1"].hb_standby("all")
                step("hb_standby all on hb1")
                hbs["hb1"].wait_for_log(r"Local standby process completed", 20, since=mark1)
                hbs["hb2"].wait_for_log(r"Standby resource acquisition done", 20, since=mark2)
                hbs["hb1"].wait_for_log(r"Other node completed standby takeover", 20, since=mark1)
                step("standby handshake complete")
            mark1 = hbs["hb1"].log_size()
            hbs["hb2"].stop()
            step("hb2 stopped cleanly")
            hbs["hb1"].wait_for_log(r"Received shutdown notice from 'hb2'", 20, since=mark1)
            if haresources:
                netns.wait_until(
                    lambda: "192.0.2.100" in net.run(hosts["hb1"], ["ip", "-4", "addr"]).stdout,
                    30,
                    message="VIP back on hb1",
                )
            hbs["hb1"].stop()
            step("hb1 stopped cleanly")
            if tcpdump is not None:
                tcpdump.stop()
            pkts = packets()
            logs = {n: hbs[n].log() for n in NODES}
        finally:
            for hb in hbs.values():
                hb.close()
            if modem is not None:
                modem.close()
    t_first = pkts[0].t if pkts else 0.0
    index = ["#file\tt_ms\tdir\tsrc\tdst\tlen\tt\tseq\tst/info"]
    for i, p in enumerate(pkts, 1):
        fname = f"{i:03d}.bin"
        (outdir / fname).write_bytes(p.data)
        extra = field(p.data, "st") or field(p.data, "info") or field(p.data, "rsc_hold")
        index.append(
            f"{fname}\t{(p.t - t_first) * 1000:.0f}\t{p.direction}\t{p.src}\t{p.dst}\t"
            f"{len(p.data)}\t{field(p.data, 't')}\t{field(p.data, 'seq')}\t{extra}"
        )
    (outdir / "index.tsv").write_text("\n".join(index) + "\n")
    meta = {
        "medium": medium,
        "auth": auth,
        "key": KEYS[auth],
        "authkeys": keys,
        "ha.cf": cfs,
        "haresources": haresources,
        "addresses": {"hb1": "192.0.2.11", "hb2": "192.0.2.12"} if medium != "serial" else {},
        "steps": steps,
        "types": sorted({field(p.data, "t") for p in pkts}),
        "count": len(pkts),
    }
    if modem is not None:
        stray = modem.stray_bytes()
        meta["stray_bytes"] = {str(k): v.decode("latin-1") for k, v in stray.items()}
    (outdir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (outdir / "logs.txt").write_text("".join(f"===== {n} =====\n{logs[n]}" for n in NODES))
    print(f"  [{name}] {len(pkts)} packets: {meta['types']}", flush=True)


SETS: dict[str, Callable[[], None]] = {}
for _medium in ("ucast", "bcast", "serial"):
    for _auth in ("crc", "md5", "sha1"):
        SETS[f"{_medium}-{_auth}"] = (
            lambda m=_medium, a=_auth: run_set(f"{m}-{a}", m, a)  # type: ignore[misc]
        )
SETS["ucast-sha1-rexmit"] = lambda: run_set("ucast-sha1-rexmit", "ucast", "sha1", rexmit=True)
SETS["ucast-sha1-haresources"] = lambda: run_set(
    "ucast-sha1-haresources", "ucast", "sha1", haresources=VIP_GROUP
)
SETS["ucast-sha1-legacy"] = lambda: run_set(
    "ucast-sha1-legacy",
    "ucast",
    "sha1",
    haresources=VIP_GROUP,
    auto_failback="legacy",
    hb1_late=True,
)


def main(argv: list[str]) -> int:
    names = argv or list(SETS)
    for n in names:
        print(f"== {n}", flush=True)
        SETS[n]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
