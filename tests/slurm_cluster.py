"""A one-node Slurm cluster on loopback, for the `slurm`-marked tests.

`SlurmCluster(root).start()` writes a munge key and a minimal `slurm.conf` under `root` (one node,
`localhost`, 2 CPUs, one partition `debug`, free ports picked at start), starts `munged`, `slurmctld`
and `slurmd` in the foreground as child processes of this one, waits until `sinfo` shows the node
idle, and `stop()` ends the three processes it started (by their pids).

Built for a container without systemd or cgroups: `proctrack/linuxproc`, `task/none`, no job
accounting (`accounting_storage/none`: `sacct` has nothing to read, so job states come from
`squeue` and `scontrol show job`, which keep finished jobs for `MinJobAge` seconds). Clients find the
cluster through `SLURM_CONF` (see `env`). Needs root (SlurmUser=root) and the Debian packages
`slurm-wlm` and `munge`; `available()` says whether they are installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo", "scancel")


def available() -> str | None:
    """None when a cluster can be started here, else the reason it cannot."""
    missing = [b for b in BINARIES if shutil.which(b) is None and not Path(f"/usr/sbin/{b}").exists()]
    if missing:
        return f"Slurm/munge not installed ({', '.join(missing)} missing; apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "the loopback Slurm cluster runs its daemons as root (SlurmUser=root); not root here"
    return None


def _which(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _mem_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return max(1024, int(line.split()[1]) // 1024 // 2)
    except OSError:
        pass
    return 4096


class SlurmCluster:
    def __init__(self, root: Path, cpus: int = 2, partition: str = "debug"):
        self.root = Path(root)
        self.cpus = cpus
        self.partition = partition
        self.procs: list[subprocess.Popen] = []
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"

    # ---------------------------------------------------------------- config
    def write_config(self) -> None:
        r = self.root
        for d in ("munge", "state", "spool", "log"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "munge").chmod(0o700)
        key = r / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        ctld_port, d_port = _free_ports(2)
        self.conf.write_text("\n".join([
            "ClusterName=spttest",
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={d_port}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            # cred_expire (default 120 s) is also how long a requeued job waits before it may start again; a
            # job started sooner (scontrol StartTime=now) is killed with "Job credential revoked"
            f"AuthInfo=socket={self.munge_socket},cred_expire=10",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=2",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "ReturnToService=2",
            "MinJobAge=3600",
            "KillWait=5",
            "InactiveLimit=0",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=60",
            "JobRequeue=1",
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={_mem_mb()} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))

    @property
    def env(self) -> dict[str, str]:
        """Environment for Slurm clients (sbatch, squeue, ...) talking to this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    # ---------------------------------------------------------------- lifecycle
    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.root / "log" / f"{name}.stdout", "ab")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen([_which(name), *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.procs.append(p)
        return p

    def start(self, timeout: float = 60) -> SlurmCluster:
        self.write_config()
        r = self.root
        self._spawn("munged", ["--foreground", "--force", f"--socket={self.munge_socket}",
                               f"--key-file={r / 'munge' / 'munge.key'}", f"--pid-file={r / 'munge' / 'munged.pid'}",
                               f"--log-file={r / 'log' / 'munged.log'}", f"--seed-file={r / 'munge' / 'seed'}"])
        self._wait(lambda: self.munge_socket.exists(), 15, "munged did not create its socket")
        self._spawn("slurmctld", ["-D", "-i", "-f", str(self.conf)])
        self._wait(lambda: self.run(["scontrol", "ping"], check=False).returncode == 0 and
                   "UP" in self.run(["scontrol", "ping"], check=False).stdout, timeout, "slurmctld did not answer")
        self._spawn("slurmd", ["-D", "-N", "localhost", "-f", str(self.conf)])
        self._wait(self._node_idle, timeout, "the node did not become idle")
        return self

    def _node_idle(self) -> bool:
        out = self.run(["sinfo", "-h", "-N", "-o", "%T"], check=False).stdout.strip()
        return out.startswith("idle")

    def _wait(self, cond, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{what}: {Path(p.args[0]).name} exited with {p.returncode}; "
                                       f"logs in {self.root / 'log'}\n{self.logs()}")
            if cond():
                return
            time.sleep(0.3)
        raise RuntimeError(f"{what} within {timeout:g} s; logs in {self.root / 'log'}\n{self.logs()}")

    def logs(self, tail: int = 30) -> str:
        out = []
        for f in sorted((self.root / "log").glob("*")):
            lines = f.read_text(errors="replace").splitlines()[-tail:]
            out.append(f"==> {f.name}\n" + "\n".join(lines))
        return "\n".join(out)

    def stop(self) -> None:
        # cancel whatever is still queued so slurmd's job processes end too
        if self.procs and self.procs[-1].poll() is None:
            self.run(["scancel", "--user=root", "--full"], check=False)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        self.procs.clear()

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- clients
    def run(self, args: list[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        p = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
        return p

    def job_states(self, job_id: str) -> dict[str, str]:
        """`<array job>_<task>` -> state, for every task of an array job Slurm still knows."""
        out = self.run(["squeue", "-h", "-j", str(job_id), "-t", "all", "-r", "-o", "%i %T"], check=False).stdout
        states = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2:
                states[parts[0]] = parts[1]
        return states
