"""Triton servers as jobs of a real single-node Slurm cluster, streamed through the many-server client."""

from __future__ import annotations

import compileall
import json
import re
import signal
import socket
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from hermes.aeriel import ServerLost, load_endpoints
from hermes.cloudbreak import JobFailed
from hermes.cloudbreak.hpc import ClientJobs, HpcDeployment, ServerJobs, SlurmScheduler

pytestmark = pytest.mark.slow

# A stateful model: y = running sum of x over the sequence (the offline reference is np.cumsum).
ACC_CONFIG = textwrap.dedent(
    """\
    name: "acc"
    backend: "python"
    max_batch_size: 8
    input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
    output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
    sequence_batching {
      max_sequence_idle_microseconds: 60000000
      oldest { max_candidate_sequences: 64 }
    }
    instance_group [ { kind: KIND_CPU count: 1 } ]
    """
)
ACC_MODEL = textwrap.dedent(
    """\
    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def initialize(self, args):
            self.sums = {}

        def execute(self, requests):
            out = []
            for r in requests:
                cid, flags = r.correlation_id(), r.flags()
                x = pb_utils.get_input_tensor_by_name(r, "x").as_numpy()
                if flags & 1:
                    self.sums[cid] = np.zeros_like(x)
                self.sums[cid] = self.sums[cid] + x
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", self.sums[cid].astype(np.float32))]))
                if flags & 2:
                    del self.sums[cid]
            return out
    """
)
STEPS = 6


def write_repo(root: Path) -> Path:
    repo = root / "repo"
    (repo / "acc" / "1").mkdir(parents=True)
    (repo / "acc" / "config.pbtxt").write_text(ACC_CONFIG)
    (repo / "acc" / "1" / "model.py").write_text(ACC_MODEL)
    compileall.compile_dir(str(repo), quiet=1)
    return repo


def our_processes(marker: str) -> list[int]:
    """Live processes whose command line names ``marker`` (the test's directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if marker in cmdline and state != "Z":
                found.append(int(entry.name))
    return found


def refused(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host.strip("[]"), int(port))) != 0


def servers(repo: Path, count: int = 2, **kwargs) -> ServerJobs:
    kwargs.setdefault("models", ("acc",))
    return ServerJobs(repository=str(repo), servers=count, runtime="local", gpus_per_server=0,
                      cpus_per_server=1, ready_timeout_s=120, **kwargs)  # fmt: skip


def test_two_slurm_servers_stream_eight_sequences_and_survive_a_cancelled_job(slurm, tmp_path):
    repo = write_repo(tmp_path)
    rng = np.random.default_rng(15)
    data = {sid: rng.normal(size=(STEPS, 1, 4)).astype(np.float32) for sid in range(1, 13)}
    reference = {sid: np.cumsum(x, axis=0) for sid, x in data.items()}
    deployment = HpcDeployment(SlurmScheduler(env=slurm.env), servers(repo), tmp_path / "run",
                               ready_timeout_s=300, poll_interval_s=0.1)  # fmt: skip
    started = time.monotonic()
    with deployment as hpc:
        up_s = time.monotonic() - started
        assert [ep.name for ep in hpc.endpoints] == [f"slurm-{job}" for job in hpc.server_jobs]
        assert load_endpoints(hpc.endpoints_file) == hpc.endpoints
        assert all("0.0.0.0" not in ep.grpc for ep in hpc.endpoints)
        assert set(hpc.status().values()) == {"RUNNING"}
        pids = our_processes(str(tmp_path))
        assert len(pids) >= 4  # two `hermes serve`, two tritonservers (and their stubs)
        with hpc.client("acc", timeout_s=30) as client:
            seqs = {sid: client.sequence(sid) for sid in range(1, 9)}
            for step in range(3):
                futures = {sid: seq.send({"x": data[sid][step]}) for sid, seq in seqs.items()}
                for sid, future in futures.items():
                    np.testing.assert_allclose(future.result(60)["y"], reference[sid][step], rtol=1e-6)
            owners = {sid: seq.endpoint for sid, seq in seqs.items()}
            assert len(set(owners.values())) == 2, owners  # the 8 sequences use both servers
            victim = owners[1]
            lost = [sid for sid, owner in owners.items() if owner == victim]
            kept = [sid for sid, owner in owners.items() if owner != victim]

            cancelled = time.monotonic()
            slurm.run("scancel", victim.removeprefix("slurm-"))
            with pytest.raises(ServerLost, match=f"server {victim}"):
                while time.monotonic() - cancelled < 60:  # the server stops within its exit timeout
                    seqs[lost[0]].send({"x": data[lost[0]][3]}).result(60)
                    time.sleep(0.02)
            lost_after_s = time.monotonic() - cancelled
            for sid in lost[1:]:  # every other sequence of the lost server fails at once
                t0 = time.monotonic()
                with pytest.raises(ServerLost, match=f"sequence {sid} is lost"):
                    seqs[sid].send({"x": data[sid][3]}).result(60)
                assert time.monotonic() - t0 < 5
            assert client.live_endpoints == [ep for ep in [e.name for e in hpc.endpoints] if ep != victim]

            for step in range(3, STEPS):  # the other server's sequences go on, unharmed
                for sid in kept:
                    y = seqs[sid].send({"x": data[sid][step]}, end=step == STEPS - 1).result(60)["y"]
                    np.testing.assert_allclose(y, reference[sid][step], rtol=1e-6)
            for sid in range(9, 13):  # new sequences go to the live server
                fresh = client.sequence(sid)
                assert fresh.endpoint != victim
                for step in range(STEPS):
                    y = fresh.send({"x": data[sid][step]}, end=step == STEPS - 1).result(60)["y"]
                    np.testing.assert_allclose(y, reference[sid][step], rtol=1e-6)
        endpoints = list(hpc.endpoints)
        jobs = hpc.server_jobs
    print(
        f"\nup -> {len(endpoints)} servers ready: {up_s:.1f} s; scancel -> ServerLost: {lost_after_s:.2f} s"
    )
    states = SlurmScheduler(env=slurm.env).states(jobs)
    assert all(state in ("CANCELLED", "COMPLETED") for state in states.values()), states
    assert not [job for job in slurm.jobs() if job.split("_")[0] == jobs[0].split("_")[0]]
    deadline = time.monotonic() + 30
    while our_processes(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert our_processes(str(tmp_path)) == []
    assert all(refused(ep.grpc) and refused(ep.http or "") for ep in endpoints)
    assert not [
        p for p in Path("/dev/shm").iterdir() if any(p.name.startswith(f"hermes{pid}x") for pid in pids)
    ]
    assert not deployment.endpoints_file.exists()
    assert list((tmp_path / "run" / "endpoints").iterdir()) == []


def test_a_server_job_that_fails_to_start_fails_up_with_its_log_and_cancels_the_rest(slurm, tmp_path):
    repo = write_repo(tmp_path)
    deployment = HpcDeployment(SlurmScheduler(env=slurm.env), servers(repo, models=("no_such_model",)),
                               tmp_path / "run", ready_timeout_s=300, poll_interval_s=0.1)  # fmt: skip
    with pytest.raises(
        JobFailed, match=r"server job \d+_\d ended \(FAILED\) before its server was ready"
    ) as info:
        deployment.up()
    assert "no_such_model" in str(info.value)
    assert deployment.batches == []
    assert not [job for job in slurm.jobs() if job.split("_")[0] == info.value.job.split("_")[0]]


def test_client_jobs_run_as_an_array_with_their_endpoints_and_segments(slurm, tmp_path):
    repo = write_repo(tmp_path)
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent(
        """\
        import json, os, sys
        from hermes.aeriel import RoutingClient
        import numpy as np
        segments = json.load(open(os.environ["HERMES_SEGMENTS"]))
        with RoutingClient(os.environ["HERMES_ENDPOINTS"], "acc") as client:
            seq = client.sequence(100 + int(os.environ["HERMES_TASK_INDEX"]))
            y = seq.send({"x": np.full((1, 4), len(segments), np.float32)}, end=True).result(60)["y"]
        out = os.path.join(sys.argv[1], "task-" + os.environ["HERMES_TASK_INDEX"] + ".json")
        json.dump({"segments": segments, "y": y.tolist()}, open(out, "w"))
        """
    ))  # fmt: skip
    results = tmp_path / "results"
    results.mkdir()
    import sys

    clients = ClientJobs(command=(sys.executable, str(probe), str(results)),
                         segments=((0, 4096), (4096, 8192), (8192, 12288)), tasks=2)  # fmt: skip
    with HpcDeployment(SlurmScheduler(env=slurm.env), servers(repo, count=1), tmp_path / "run",
                       ready_timeout_s=300, poll_interval_s=0.1) as hpc:  # fmt: skip
        batch = hpc.submit_clients(clients)
        assert batch.jobs == (f"{batch.submission}_0", f"{batch.submission}_1")
        deadline = time.monotonic() + 180
        while len(list(results.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        import json

        got = {p.name: json.loads(p.read_text()) for p in results.iterdir()}
    assert got["task-0.json"] == {"segments": [[0, 4096], [8192, 12288]], "y": [[2.0] * 4]}
    assert got["task-1.json"] == {"segments": [[4096, 8192]], "y": [[1.0] * 4]}


def test_hermes_hpc_up_prints_the_endpoints_and_down_removes_everything(slurm, tmp_path):
    import subprocess
    import sys

    hermes = str(Path(sys.executable).parent / "hermes")
    repo, run = write_repo(tmp_path), tmp_path / "run"
    args = [hermes, "hpc", "up", str(repo), "--scheduler", "slurm", "--servers", "2", "--runtime", "local",
            "--gpus-per-server", "0", "--cpus-per-server", "1", "--model", "acc", "--workdir", str(run),
            "--partition", "debug", "--sbatch", "--comment=hermes-test", "--timeout", "300"]  # fmt: skip
    dry = subprocess.run([*args, "--dry-run"], env=slurm.env, capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert not run.exists()
    script = dry.stdout.split(f"# ---- file {run}/server.sbatch\n")[1].split("# ---- commands\n")[0]
    assert dry.stdout.endswith(f"# ---- commands\nsbatch --parsable {run}/server.sbatch\n")
    assert "#SBATCH --partition=debug\n#SBATCH --comment=hermes-test\n" in script
    up = subprocess.run(args, env=slurm.env, capture_output=True, text=True, timeout=400)
    try:
        assert up.returncode == 0, up.stderr
        assert (run / "server.sbatch").read_text() == script  # what ran is what the dry run printed
        endpoints = load_endpoints(run / "endpoints.json")
        assert len(endpoints) == 2
        for ep in endpoints:
            assert f"  {ep.name}  grpc {ep.grpc}  http {ep.http}  metrics {ep.metrics}" in up.stdout
        assert re.search(r"2 server\(s\) ready in [\d.]+ s \(slurm jobs \d+_0, \d+_1\)", up.stdout)
        status = subprocess.run([hermes, "hpc", "status", "--workdir", str(run)], env=slurm.env,
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert re.findall(r"^(\d+_\d)  RUNNING$", status.stdout, re.M) == [
            ep.name.removeprefix("slurm-") for ep in endpoints
        ]
    finally:
        down = subprocess.run([hermes, "hpc", "down", "--workdir", str(run)], env=slurm.env,
                              capture_output=True, text=True, timeout=200)  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert down.stdout.startswith("cancelled 2 job(s)")
    assert slurm.jobs() == [] or not any(
        j.startswith(endpoints[0].name.removeprefix("slurm-").split("_")[0] + "_") for j in slurm.jobs()
    )
    deadline = time.monotonic() + 30
    while our_processes(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert our_processes(str(tmp_path)) == []
    assert not (run / "endpoints.json").exists() and not (run / "hpc.json").exists()


SIGNAL_SCRIPT = """
import sys, time
from hermes.cloudbreak.hpc import HpcDeployment, ServerJobs, SlurmScheduler

repo, workdir, when = sys.argv[1], sys.argv[2], sys.argv[3]
servers = ServerJobs(repository=repo, servers=2, runtime="local", gpus_per_server=0, cpus_per_server=1,
                     models=("acc",) if when == "ready" else ("acc", "never_ready"), ready_timeout_s=600)
with HpcDeployment(SlurmScheduler(), servers, workdir, poll_interval_s=0.1):
    print("ready", flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize(
    ("sig", "when"), [(signal.SIGHUP, "ready"), (signal.SIGTERM, "ready"), (signal.SIGINT, "waiting")]
)
def test_a_signal_cancels_every_job(slurm, tmp_path, sig, when):
    import subprocess
    import sys

    repo = write_repo(tmp_path)
    if when == "waiting":  # a model that never loads: `up` is still waiting when the signal comes
        (repo / "never_ready" / "1").mkdir(parents=True)
        (repo / "never_ready" / "config.pbtxt").write_text(
            ACC_CONFIG.replace('name: "acc"', 'name: "never_ready"')
        )
        (repo / "never_ready" / "1" / "model.py").write_text(
            "import time\nclass TritonPythonModel:\n    def initialize(self, args):\n        time.sleep(3600)\n"
        )
    proc = subprocess.Popen([sys.executable, "-c", SIGNAL_SCRIPT, str(repo), str(tmp_path / "run"), when],
                            env=slurm.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        state_file = tmp_path / "run" / "hpc.json"  # the deployment's state, written once submitted
        deadline = time.monotonic() + 120
        while not state_file.exists():
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        submission = json.loads(state_file.read_text())["batches"][0]["submission"]
        if when == "ready":
            assert proc.stdout.readline().strip() == "ready"
        else:
            deadline = time.monotonic() + 120
            while set(
                SlurmScheduler(env=slurm.env).states([f"{submission}_0", f"{submission}_1"]).values()
            ) != {"RUNNING"}:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        proc.send_signal(sig)
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert not [job for job in slurm.jobs() if job.split("_")[0] == submission]
    states = SlurmScheduler(env=slurm.env).states([f"{submission}_0", f"{submission}_1"])
    assert set(states.values()) <= {"CANCELLED", "COMPLETED"}, states
    deadline = time.monotonic() + 30
    while our_processes(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert our_processes(str(tmp_path)) == []
