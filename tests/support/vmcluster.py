"""A real Kubernetes cluster of virtual machines, for the tests and benchmarks of issue 13.

Two Debian guests under QEMU are the cluster's nodes: each runs containerd and runc from Debian,
the upstream kubelet and kube-proxy (``tests/kubeparts``, the API server's Kubernetes release),
Debian's CNI plugins (bridge + host-local) for pod networking, and whatever the scheduler puts
there (the operator's pods, the agents' DaemonSet) from images built here (``images/build.sh``,
loaded into each node's containerd). The host runs the control plane: the test API server
(``tests/controlplane``, with the Node authorizer, ServiceAccount admission and the ``kubernetes``
Service's endpoint), kube-controller-manager and kube-scheduler. Everyone authenticates as in a
real cluster: kubelets as ``system:node:<name>`` with client certificates, pods with projected
ServiceAccount tokens through the ``kubernetes`` Service (kube-proxy's rules in each node).

Layout (addresses from the documentation ranges only; nothing is bridged to the host's LAN)::

    switch namespace <id>-sw   br0 "public" LAN: the nodes' eth0, the client, the host's veth
                               brhb heartbeat LAN: the nodes' eth1 only
    node i (guest)             eth0 192.0.2.(10+i)/24 (the VIP's LAN) + <api /28>.(11+i) (the
                               node's InternalIP, where the API server reaches its kubelet)
                               eth1 203.0.113.(192+i)/28, /dev/ttyS0 the null-modem cable to
                               the other node (the console on ttyS1)
    client (namespace <id>-h3) eth0 192.0.2.13/24
    host (root namespace)      <api /28>.1: the API server, on a free /28 of 198.51.100.0/24
    pods                       203.0.113.0/26 on node 1, 203.0.113.64/26 on node 2
    Services                   203.0.113.128/26 (the ``kubernetes`` Service: 203.0.113.129)

203.0.113.0/24 is only ever inside the guests: the host has no address or route there (the
package mirror resolves into it on this kind of machine, shared/vm-lab.md).

Everything (QEMU, the control-plane processes, namespaces, disks, logs) is removed when the
``with vm_cluster(...)`` block ends, also on failure; the processes die with the test process.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support import netns, vmlab
from tests.support.controlplane import ControlPlane, find_or_build_apiserver
from tests.support.images import PAUSE_IMAGE, Images, ensure_images, ensure_pause_image
from tests.support.kubetools import ensure_kubetools
from tests.support.lab import free_api_subnet

REPO = Path(__file__).resolve().parents[2]
KUBEPARTS_BUILD = REPO / "tests" / "kubeparts" / "build.sh"
SERVICE_CIDR = "203.0.113.128/26"
POD_CIDRS = ("203.0.113.0/26", "203.0.113.64/26")
HEARTBEAT_NET = ipaddress.IPv4Network("203.0.113.192/28")
LAN = ipaddress.IPv4Network("192.0.2.0/24")
CLIENT = 3  # the client is netns host 3: 192.0.2.13
GUEST_MEMORY_MIB = 1536
KUBEPARTS_IN_GUEST = "/usr/local/bin/kubeparts"

NODE_PACKAGES = (
    *vmlab.BASE_PACKAGES,
    "containerd",
    "runc",
    "containernetworking-plugins",
    "iptables",
    "conntrack",
    "ethtool",
    "socat",
    "ca-certificates",
    "iputils-ping",
)

CONTAINERD_CONFIG = f"""\
# containerd for the kubelet (CRI): systemd cgroups, Debian's CNI plugins, our own pause image.
version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
"""

UNIT_NET = """\
[Unit]
Description=hacluster VM lab: this node's addresses and routes (written by tests/support/vmcluster.py)
ConditionPathExists=/etc/hacluster-vm/net.sh
Before=containerd.service kubelet.service kube-proxy.service
After=systemd-modules-load.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -e /etc/hacluster-vm/net.sh

[Install]
WantedBy=multi-user.target
"""

UNIT_KUBELET = f"""\
[Unit]
Description=kubelet (tests/kubeparts)
ConditionPathExists=/etc/kubernetes/kubelet.yaml
Requires=containerd.service
After=containerd.service hacluster-net.service

[Service]
EnvironmentFile=/etc/kubernetes/node.env
ExecStart={KUBEPARTS_IN_GUEST} kubelet --config=/etc/kubernetes/kubelet.yaml \\
  --kubeconfig=/etc/kubernetes/kubelet.kubeconfig --node-ip=${{NODE_IP}} --hostname-override=${{NODE_NAME}}
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
"""

UNIT_PROXY = f"""\
[Unit]
Description=kube-proxy (tests/kubeparts)
ConditionPathExists=/etc/kubernetes/proxy.kubeconfig
After=hacluster-net.service

[Service]
EnvironmentFile=/etc/kubernetes/node.env
ExecStart={KUBEPARTS_IN_GUEST} kube-proxy --kubeconfig=/etc/kubernetes/proxy.kubeconfig \\
  --hostname-override=${{NODE_NAME}} --cluster-cidr=203.0.113.0/25 --proxy-mode=iptables \\
  --conntrack-max-per-core=0
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
"""


def node_recipe(kubeparts: Path) -> vmlab.Recipe:
    """The node guests' image: the lab's base, containerd/runc/CNI from Debian, the kubelet and
    kube-proxy binary, and their units (they start at boot once a node's files are written)."""
    return vmlab.Recipe(
        "node",
        NODE_PACKAGES,
        files=(
            ("etc/containerd/config.toml", CONTAINERD_CONFIG),
            ("etc/modules-load.d/hacluster-vm.conf", "overlay\nbr_netfilter\n"),
            (
                "etc/sysctl.d/90-hacluster-vm.conf",
                "net.ipv4.ip_forward = 1\nnet.bridge.bridge-nf-call-iptables = 1\n"
                "net.ipv6.conf.all.disable_ipv6 = 1\n",
            ),
            ("etc/systemd/system/hacluster-net.service", UNIT_NET),
            ("etc/systemd/system/kubelet.service", UNIT_KUBELET),
            ("etc/systemd/system/kube-proxy.service", UNIT_PROXY),
        ),
        enabled=("hacluster-net.service", "kubelet.service", "kube-proxy.service"),
        binaries=((KUBEPARTS_IN_GUEST, kubeparts),),
        console="ttyS1",  # /dev/ttyS0 is the heartbeat cable, as in the article's ha.cf
        free_mib=4096,  # containerd: the images' layers (~0.5 GB), unpacked once more, and logs
    )


def ensure_prepared_disk(image: vmlab.Image, archives: Sequence[Path]) -> Path:
    """A node disk (qcow2 on the node image) whose containerd already holds the images: importing
    them takes minutes under emulation, so it is done once per set of images and cached beside
    the image (vmlab.CACHE_ROOT/prepared-<key>.qcow2, <key> naming the image and the archives,
    whose names carry their own input keys). Both nodes' disks start from it."""
    key = hashlib.sha256("\n".join([str(image.dir), *map(str, archives)]).encode()).hexdigest()[:16]
    root = image.dir.parent
    final = root / f"prepared-{key}.qcow2"
    if final.exists():
        return final
    with (root / ".prepared.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.exists():
            return final
        work = Path(tempfile.mkdtemp(prefix=".prepared-", dir=root))
        try:
            share = work / "images"
            share.mkdir()
            for a in archives:
                shutil.copyfile(a, share / a.name)  # the cache may be on another file system
            disk = work / "disk.qcow2"
            with vmlab.boot(
                image,
                (vmlab.Share(share, "/var/lib/hacluster-vm/images", "images"),),
                memory_mib=GUEST_MEMORY_MIB,
                ready_timeout=600,
                disk=disk,
            ) as vm:
                vm.check("systemctl start containerd.service", timeout=120)
                for a in archives:
                    vm.check(
                        f"ctr -n k8s.io images import /var/lib/hacluster-vm/images/{a.name}", timeout=1800
                    )
                # each node gets its own identity at its first boot; nothing else to forget
                vm.check(": > /etc/machine-id && sync", timeout=120)
                # the guest agent may go before it answers: the power-off is what is waited for
                with contextlib.suppress(vmlab.VMError, TimeoutError, OSError):
                    vm.shell("systemctl poweroff", timeout=30)
                if vm.wait_exit(180) is None:
                    raise vmlab.VMError("the disk-preparing guest did not power off" + vm.evidence())
            for old in root.glob("prepared-*.qcow2"):
                old.unlink()
            disk.rename(final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return final


def find_or_build_kubeparts() -> Path:
    """tests/kubeparts/build.sh (a no-op when cached): the kubelet/kube-proxy/controller-manager/
    scheduler binary."""
    proc = subprocess.run(
        ["bash", str(KUBEPARTS_BUILD)], capture_output=True, text=True, timeout=3 * 3600, check=False
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-30:])
        raise vmlab.VMError(f"tests/kubeparts/build.sh failed ({proc.returncode}):\n{tail}")
    return Path(proc.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class NodePlan:
    """One node guest's names and addresses."""

    index: int  # 1-based
    name: str
    kube_ip: str  # InternalIP, on the host's /28
    kube_prefix: int
    lan: str  # 192.0.2.(10+i)/24
    heartbeat: str  # 203.0.113.(192+i)/28
    pod_cidr: str
    mac_lan: str
    mac_heartbeat: str

    @property
    def tap_lan(self) -> str:
        return f"vm{self.index}lan"

    @property
    def tap_heartbeat(self) -> str:
        return f"vm{self.index}hb"

    @property
    def lan_ip(self) -> str:
        return self.lan.split("/")[0]

    @property
    def heartbeat_ip(self) -> str:
        return self.heartbeat.split("/")[0]


def plan_nodes(names: Sequence[str], subnet: ipaddress.IPv4Network) -> tuple[NodePlan, ...]:
    hosts = list(subnet.hosts())
    return tuple(
        NodePlan(
            index=i,
            name=name,
            kube_ip=str(hosts[10 + i]),
            kube_prefix=subnet.prefixlen,
            lan=f"{LAN.network_address + 10 + i}/{LAN.prefixlen}",
            heartbeat=f"{HEARTBEAT_NET.network_address + i}/{HEARTBEAT_NET.prefixlen}",
            pod_cidr=POD_CIDRS[i - 1],
            mac_lan=f"52:54:00:ac:00:{i:02x}",
            mac_heartbeat=f"52:54:00:ac:01:{i:02x}",
        )
        for i, name in enumerate(names, 1)
    )


class _Proc:
    """A control-plane process on the host, logged to a file, killed by its PID at the end."""

    def __init__(self, name: str, argv: Sequence[str], log: Path) -> None:
        self.name, self.log = name, log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=vmlab.die_with_parent,
            )

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise vmlab.VMError(f"{self.name} exited ({self.proc.returncode}); its log:\n{_tail(self.log)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class VmCluster:
    """The running cluster (from :func:`vm_cluster`)."""

    workdir: Path
    net: netns.Network
    cp: ControlPlane
    nodes: tuple[NodePlan, ...]
    image: vmlab.Image
    prepared: Path  # the disk both nodes start from: the images already in containerd
    images: Images
    guests: dict[str, vmlab.VM] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    _stacks: dict[str, contextlib.ExitStack] = field(default_factory=dict)
    _procs: list[_Proc] = field(default_factory=list)

    # -- names ------------------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        """The admin's kubeconfig (kubectl, helm)."""
        return self.cp.kubeconfig

    @property
    def client_ns(self) -> str:
        return self.net[CLIENT - 1].ns

    def node(self, name: str) -> NodePlan:
        return next(n for n in self.nodes if n.name == name)

    def client(self, argv: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a command on the client (its namespace on the nodes' LAN)."""
        return subprocess.run(
            ["ip", "netns", "exec", self.client_ns, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # -- machines ---------------------------------------------------------------------------------
    def power_on(self, name: str, *, ready_timeout: float = 300.0, wait: bool = True) -> vmlab.VM:
        """Boot node `name` on its own disk (what it wrote before a power cut is still there).
        From the main thread: QEMU dies with the thread that started it. `wait=False`: return
        at once, vm.wait_ready() later (from any thread)."""
        plan = self.node(name)
        stack = contextlib.ExitStack()
        cable_end = vmlab.Cable(self.workdir / "cable.sock", server=plan.index == 1)
        vm = stack.enter_context(
            vmlab.boot(
                self.image,
                (),
                memory_mib=GUEST_MEMORY_MIB,
                ready_timeout=ready_timeout,
                nics=(
                    vmlab.Nic(plan.tap_lan, plan.mac_lan),
                    vmlab.Nic(plan.tap_heartbeat, plan.mac_heartbeat),
                ),
                cable=cable_end,
                netns=self.net.switch_ns,
                disk=self.workdir / f"{name}.qcow2",
                backing=self.prepared,
                wait=wait,
            )
        )
        self._stacks[name] = stack
        self.guests[name] = vm
        return vm

    def power_off(self, name: str) -> None:
        """Pull node `name`'s plug (QEMU SIGKILLed); its disk stays for power_on()."""
        vm = self.guests.pop(name)
        vm.power_off()
        self._stacks.pop(name).close()

    def close(self) -> None:
        for name in list(self._stacks):
            with contextlib.suppress(Exception):
                self._stacks.pop(name).close()
        self.guests.clear()
        for p in reversed(self._procs):
            with contextlib.suppress(Exception):
                p.stop()

    # -- set-up steps -----------------------------------------------------------------------------
    def start_control_plane(self, kubeparts: Path) -> None:
        pki = self.cp.kubeconfig.parent / "pki"
        cm = self.cp.client_kubeconfig(
            self.workdir / "controller-manager.kubeconfig", "system:kube-controller-manager"
        )
        sched = self.cp.client_kubeconfig(self.workdir / "scheduler.kubeconfig", "system:kube-scheduler")
        self._procs.append(
            _Proc(
                "kube-controller-manager",
                [
                    str(kubeparts), "kube-controller-manager",
                    f"--kubeconfig={cm}", f"--authentication-kubeconfig={cm}", f"--authorization-kubeconfig={cm}",
                    f"--service-account-private-key-file={pki / 'sa.key'}",
                    f"--root-ca-file={pki / 'server-ca.crt'}",
                    "--use-service-account-credentials=true", "--leader-elect=false", "--secure-port=0",
                    f"--service-cluster-ip-range={SERVICE_CIDR}", "--cluster-name=hacluster-vm",
                ],
                self.workdir / "kube-controller-manager.log",
            )
        )  # fmt: skip
        self._procs.append(
            _Proc(
                "kube-scheduler",
                [
                    str(kubeparts), "kube-scheduler",
                    f"--kubeconfig={sched}", f"--authentication-kubeconfig={sched}",
                    f"--authorization-kubeconfig={sched}", "--leader-elect=false", "--secure-port=0",
                ],
                self.workdir / "kube-scheduler.log",
            )
        )  # fmt: skip

    def configure(self, name: str) -> None:
        """Write node `name`'s own files (addresses, kubelet and kube-proxy configuration and
        credentials, CNI) and start what they enable; they stay on its disk for later boots."""
        vm, plan = self.guests[name], self.node(name)
        other = next(n for n in self.nodes if n.name != name)
        d = self.workdir / name
        d.mkdir(exist_ok=True)
        kubelet_kc = self.cp.client_kubeconfig(
            d / "kubelet.kubeconfig", f"system:node:{name}", ["system:nodes"]
        )
        proxy_kc = self.cp.client_kubeconfig(d / "proxy.kubeconfig", "system:kube-proxy")
        net_sh = "\n".join(
            [
                f"hostname {name}",
                "ip link set lo up",
                "ip link set eth0 up",
                "ip link set eth1 up",
                # with their broadcast addresses, as ifupdown sets them (bcast media need them)
                f"ip addr replace {plan.kube_ip}/{plan.kube_prefix} brd + dev eth0",
                f"ip addr replace {plan.lan} brd + dev eth0",
                f"ip addr replace {plan.heartbeat} brd + dev eth1",
                # the Services' range and the other node's pods: through eth0, never via the host
                f"ip route replace {SERVICE_CIDR} dev eth0 src {plan.kube_ip}",
                f"ip route replace {other.pod_cidr} via {other.kube_ip} dev eth0",
                "",
            ]
        )
        kubelet = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "cgroupDriver": "systemd",
            "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": "/etc/kubernetes/client-ca.crt"},
            },
            "authorization": {"mode": "Webhook"},
            "failSwapOn": False,
            "podCIDR": plan.pod_cidr,
            "resolvConf": "",
            "serializeImagePulls": False,
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        }
        cni = {
            "cniVersion": "1.0.0",
            "name": "hacluster-vm",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": plan.pod_cidr}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        vm.check("mkdir -p /etc/hacluster-vm /etc/kubernetes /etc/cni/net.d")
        vm.write_file("/etc/hostname", f"{name}\n")
        vm.write_file("/etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {name}\n")
        vm.write_file("/etc/hacluster-vm/net.sh", net_sh)
        vm.write_file("/etc/kubernetes/node.env", f"NODE_NAME={name}\nNODE_IP={plan.kube_ip}\n")
        vm.write_file(
            "/etc/kubernetes/client-ca.crt", (self.cp.kubeconfig.parent / "pki" / "client-ca.crt").read_text()
        )
        vm.write_file("/etc/kubernetes/kubelet.kubeconfig", kubelet_kc.read_text(), 0o600)
        vm.write_file("/etc/kubernetes/proxy.kubeconfig", proxy_kc.read_text(), 0o600)
        vm.write_file("/etc/kubernetes/kubelet.yaml", yaml.safe_dump(kubelet))
        vm.write_file("/etc/cni/net.d/10-hacluster-vm.conflist", json.dumps(cni, indent=1))
        vm.check("systemctl start hacluster-net.service && systemctl restart containerd.service", timeout=120)
        vm.check("systemctl start kubelet.service kube-proxy.service", timeout=120)

    def wait_nodes_ready(self, timeout: float = 300.0) -> None:
        from kubernetes import client as k8s

        with self.cp.api_client() as api:
            core = k8s.CoreV1Api(api)

            def ready() -> bool:
                for p in self._procs:
                    p.check()
                names = {
                    n.metadata.name
                    for n in core.list_node().items
                    if n.metadata is not None
                    and n.status is not None
                    and any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or []))
                }
                return all(n.name in names for n in self.nodes)

            netns.wait_until(ready, timeout, interval=1.0, message="both nodes Ready")

    def evidence(self) -> str:
        """What a failing test shows: the control plane's logs, each guest's console and units."""
        parts = [f"--- {p.name}:\n{_tail(p.log, 20)}" for p in self._procs]
        for name, vm in self.guests.items():
            with contextlib.suppress(Exception):
                r = vm.shell(
                    "systemctl --no-pager --failed; journalctl --no-pager -n 40 -u kubelet -u kube-proxy", 30
                )
                parts.append(f"--- {name}: units and journal\n{r.out}{r.err}")
            parts.append(vm.evidence(30))
        return "\n".join(parts)


def _bind(fn: Callable[[str], object], arg: str) -> Callable[[], None]:
    def run() -> None:
        fn(arg)

    return run


def _parallel(fns: Sequence[Callable[[], None]]) -> None:
    """Run fns in threads; re-raise the first error after all ended."""
    errors: list[BaseException] = []

    def run(fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(fn,), daemon=True) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@contextlib.contextmanager
def vm_cluster(node_names: Sequence[str] = ("n1", "n2")) -> Iterator[VmCluster]:
    """Build (or find cached) everything, start the control plane, boot and join both nodes;
    yields once both are Ready with the images loaded. Removes it all on exit."""
    if reason := vmlab.unavailable():
        raise vmlab.VMError(reason)
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    kubeparts = find_or_build_kubeparts()
    apiserver = find_or_build_apiserver()
    images = ensure_images()
    pause = ensure_pause_image()
    image = vmlab.ensure_image(node_recipe(kubeparts))
    prepared = ensure_prepared_disk(image, (*images.archives, pause))
    timings["prerequisites (cached or built)"] = time.monotonic() - t0
    workdir = Path(tempfile.mkdtemp(prefix="hacluster-vmcluster-"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)
        net = stack.enter_context(netns.network(CLIENT, plugged=(CLIENT,)))
        subnet = free_api_subnet()
        host_ip = str(next(iter(subnet.hosts())))
        host_if = f"{net.id}-h"
        net.attach_root(host_if)
        subprocess.run(["ip", "addr", "add", f"{host_ip}/{subnet.prefixlen}", "dev", host_if], check=True)
        subprocess.run(["ip", "link", "set", host_if, "up"], check=True)
        # The host answers ARP on this link for its own address there only.
        subprocess.run(["sysctl", "-q", "-w", f"net.ipv4.conf.{host_if}.arp_ignore=1"], check=True)
        net.add_bridge("brhb")
        nodes = plan_nodes(node_names, subnet)
        for plan in nodes:
            net.add_tap(plan.tap_lan, "br0")
            net.add_tap(plan.tap_heartbeat, "brhb")
        cp = ControlPlane(
            apiserver,
            bind_address=host_ip,
            service_cidr=SERVICE_CIDR,
            authorization="Node,RBAC",
            endpoint_reconciler="lease",
            service_account_admission=True,
            kubelet_client=True,
            extra_args=["--enable-admission-plugins=NodeRestriction"],
            log_path=workdir / "kube-apiserver.log",
        )
        stack.callback(cp.stop)
        t = time.monotonic()
        cp.start()
        timings["API server started"] = time.monotonic() - t
        cluster = VmCluster(
            workdir=workdir,
            net=net,
            cp=cp,
            nodes=nodes,
            image=image,
            prepared=prepared,
            images=images,
            timings=timings,
        )

        def on_exit() -> None:  # SIGTERM or interpreter exit: the with block may not unwind
            cluster.close()
            cp.stop()
            shutil.rmtree(workdir, True)

        token = netns.register_cleanup(on_exit)
        stack.callback(netns.unregister_cleanup, token)
        stack.callback(cluster.close)
        cluster.start_control_plane(kubeparts)
        t = time.monotonic()
        for n in nodes:  # started here (they die with the thread that started them), booted in parallel
            cluster.power_on(n.name, wait=False)
        _parallel([_bind(lambda name: cluster.guests[name].wait_ready(300.0), n.name) for n in nodes])
        timings["guests booted"] = time.monotonic() - t
        t = time.monotonic()
        try:
            _parallel([_bind(cluster.configure, n.name) for n in nodes])
            cluster.wait_nodes_ready()
        except BaseException as e:
            raise vmlab.VMError(f"the cluster did not come up: {e}\n{cluster.evidence()}") from e
        timings["nodes joined (Ready)"] = time.monotonic() - t
        yield cluster


def helm_install(cluster: VmCluster, namespace: str = "hacluster-system") -> str:
    """The user's `helm install` of charts/hacluster, only the image references overridden."""
    tools = ensure_kubetools()
    images = cluster.images
    op_repo, op_tag = images.operator.rsplit(":", 1)
    ag_repo, ag_tag = images.agent.rsplit(":", 1)
    argv = [
        str(tools.helm), "install", "hacluster", str(REPO / "charts" / "hacluster"),
        "--kubeconfig", str(cluster.kubeconfig), "--namespace", namespace, "--create-namespace",
        "--set", f"operator.image.repository={op_repo}", "--set", f"operator.image.tag={op_tag}",
        "--set", f"agents.image.repository={ag_repo}", "--set", f"agents.image.tag={ag_tag}",
        "--wait", "--timeout", "10m",
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        raise vmlab.VMError(
            f"helm install failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}\n{cluster.evidence()}"
        )
    return proc.stdout


def kubectl(cluster: VmCluster, *args: str, timeout: float = 120.0) -> str:
    tools = ensure_kubetools()
    proc = subprocess.run(
        [str(tools.kubectl), "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise vmlab.VMError(
            f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )
    return proc.stdout


EXAMPLE = REPO / "examples" / "article"
EXAMPLE_NAMESPACE = "ha"
EXAMPLE_NODES = ("servidor1", "servidor2")  # the article's node names: its manifest applies unchanged
EXAMPLE_VIP = "192.0.2.10"


def hacluster(cluster: VmCluster, name: str, namespace: str = EXAMPLE_NAMESPACE) -> dict[str, Any]:
    out = kubectl(cluster, "-n", namespace, "get", "hacluster", name, "-o", "json")
    return dict(json.loads(out))


def ready_owner(cluster: VmCluster, name: str, namespace: str = EXAMPLE_NAMESPACE) -> str | None:
    """The owner, once the HACluster's Ready condition is True (else None)."""
    status = hacluster(cluster, name, namespace).get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    return str(status["owner"]) if ready and status.get("owner") else None


def pair_joined(cluster: VmCluster, name: str, namespace: str = EXAMPLE_NAMESPACE) -> bool:
    """Both nodes active and every heartbeat medium of each up, as the HACluster's status says
    (the agents hear each other over the cable and the LAN)."""
    status = hacluster(cluster, name, namespace).get("status") or {}
    nodes = [n for n in status.get("nodes") or [] if isinstance(n, dict)]
    return len(nodes) == 2 and all(
        n.get("state") == "active" and n.get("media") and set(n["media"].values()) == {"up"} for n in nodes
    )


def vip_mac(cluster: VmCluster, vip: str) -> str | None:
    """The MAC that answers ARP for `vip` on the LAN, as the client sees it (None: nobody)."""
    r = cluster.client(["arping", "-c", "1", "-w", "2", "-I", "eth0", vip], timeout=10)
    for word in r.stdout.replace("[", " ").replace("]", " ").split():
        if word.count(":") == 5:
            return word.lower()
    return None


def install_example(cluster: VmCluster, timeout: float = 600.0) -> dict[str, str]:
    """The user's path: `helm install` of the chart (image references overridden), `kubectl
    apply` of examples/article into namespace `ha`, until the pair is Ready and the VIP answers
    the client from the owner's MAC. Returns what each step printed."""
    out: dict[str, str] = {}
    t0 = time.monotonic()
    out["helm install"] = helm_install(cluster)
    cluster.timings["helm install (operator pods Ready)"] = time.monotonic() - t0
    kubectl(cluster, "create", "namespace", EXAMPLE_NAMESPACE)
    t0 = time.monotonic()
    out["kubectl apply"] = kubectl(cluster, "-n", EXAMPLE_NAMESPACE, "apply", "-f", str(EXAMPLE))
    try:

        def joined_owner() -> str | None:
            return ready_owner(cluster, "article") if pair_joined(cluster, "article") else None

        owner = netns.wait_until(
            joined_owner,
            timeout,
            interval=2.0,
            message="article Ready, both agents hearing each other",
        )
        mac = cluster.node(owner).mac_lan
        netns.wait_until(
            lambda: vip_mac(cluster, EXAMPLE_VIP) == mac, 120, interval=1.0, message="VIP answers"
        )
    except BaseException as e:
        pods = kubectl(cluster, "get", "pods", "-A", "-o", "wide")
        raise vmlab.VMError(f"the example did not come up: {e}\n{pods}\n{cluster.evidence()}") from e
    cluster.timings["kubectl apply to VIP answering"] = time.monotonic() - t0
    out["kubectl get hac"] = kubectl(cluster, "-n", EXAMPLE_NAMESPACE, "get", "hac")
    out["kubectl ha status"] = kubectl_ha(cluster, "-n", EXAMPLE_NAMESPACE, "status", "article")
    return out


def kubectl_ha(cluster: VmCluster, *args: str) -> str:
    """The kubectl plugin (`kubectl ha`), as installed with the project."""
    tools = ensure_kubetools()
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    env["PATH"] = f"{REPO / '.venv' / 'bin'}:{tools.kubectl.parent}:{env.get('PATH', '')}"
    proc = subprocess.run(
        [str(tools.kubectl), "ha", *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise vmlab.VMError(
            f"kubectl ha {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )
    return proc.stdout


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tests.support.vmcluster`: build what is missing, start the VM cluster, install
    the chart and the article's example, print each step and its time; keep it up until Ctrl-C
    (or exit at once with --down)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.support.vmcluster", description=main.__doc__)
    parser.add_argument("--down", action="store_true", help="tear everything down once it is up")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    with vm_cluster(EXAMPLE_NODES) as cluster:
        print(f"cluster up: API server {cluster.cp.url}, admin kubeconfig {cluster.kubeconfig}", flush=True)
        for step, text in install_example(cluster).items():
            print(f"$ {step}\n{text.rstrip()}", flush=True)
        for what, seconds in cluster.timings.items():
            print(f"  {what}: {seconds:.0f} s")
        print(f"up in {time.monotonic() - t0:.0f} s", flush=True)
        if not args.down:
            print("Ctrl-C tears it down.", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
