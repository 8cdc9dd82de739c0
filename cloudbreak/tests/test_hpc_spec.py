"""Server and client job specs and the Slurm scripts they make (no scheduler needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hermes.cloudbreak import CloudConfigError
from hermes.cloudbreak.hpc import ClientJobs, ServerJobs, SlurmOptions, SlurmScheduler
from hermes.cloudbreak.hpc.slurm import client_script, server_script


def sbatch_lines(script: str) -> list[str]:
    return [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH ")]


def test_gpu_server_script_asks_for_gres_partition_account_time_and_runs_hermes_serve(tmp_path):
    servers = ServerJobs(repository="/home/albert.einstein/repo", servers=4, image="tritonserver_24.10-py3.sif",
                         gpus_per_server=2, cpus_per_server=8, memory="64G", time_limit="08:00:00",
                         models=("aframe-stream",), env={"OMP_NUM_THREADS": "2"}, hermes=("/opt/hermes/bin/hermes",))  # fmt: skip
    options = SlurmOptions(partition="gpu", account="ml4gw", qos="normal", constraint="a100", gres="gpu:a100",
                           extra=("--exclusive",))  # fmt: skip
    script = server_script(servers, options, tmp_path)
    assert sbatch_lines(script) == [
        "--job-name=hermes-triton", "--array=0-3", f"--output={tmp_path}/logs/server-%A_%a.out", "--nodes=1",
        "--ntasks=1", "--cpus-per-task=8", "--gres=gpu:a100:2", "--mem=64G", "--time=08:00:00",
        "--partition=gpu", "--account=ml4gw", "--qos=normal", "--constraint=a100", "--exclusive",
    ]  # fmt: skip
    assert 'export OMP_NUM_THREADS="2"\n' in script
    exec_line = script.splitlines()[-1]
    assert exec_line.startswith("exec /opt/hermes/bin/hermes serve /home/albert.einstein/repo --runtime apptainer "
                                "--image tritonserver_24.10-py3.sif --address 0.0.0.0 --advertise auto")  # fmt: skip
    assert "--gpus" not in exec_line  # every GPU Slurm gave the job (--nv)
    assert (
        '--endpoints-file "' + f"{tmp_path}/endpoints/" + '${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}.json"'
        in exec_line
    )
    assert subprocess.run(["bash", "-n"], input=script, text=True, check=False).returncode == 0


def test_cpu_server_script_has_no_gres_and_serves_without_gpus(tmp_path):
    servers = ServerJobs(repository="/repo", runtime="local", gpus_per_server=0)
    script = server_script(servers, SlurmOptions(), tmp_path)
    assert not any(line.startswith("--gres") for line in sbatch_lines(script))
    assert script.rstrip().endswith("--gpus none")


def test_client_script_gives_each_task_its_endpoints_and_segments(tmp_path):
    clients = ClientJobs(command="python infer.py --ifos H1 L1", segments=[(0, 10), (10, 20), (20, 30)], tasks=2,
                         time_limit="01:00:00")  # fmt: skip
    plan = SlurmScheduler().client_plan(clients, tmp_path, tmp_path / "endpoints.json", servers=2)
    script = plan.files[tmp_path / "client.sbatch"]
    assert "--array=0-1" in sbatch_lines(script) and "--time=01:00:00" in sbatch_lines(script)
    assert f"export HERMES_ENDPOINTS={tmp_path}/endpoints.json\n" in script
    assert script.rstrip().endswith("exec python infer.py --ifos H1 L1")
    assert plan.files[tmp_path / "clients" / "segments-0.json"] == "[[0, 10], [20, 30]]\n"
    assert plan.files[tmp_path / "clients" / "segments-1.json"] == "[[10, 20]]\n"
    assert plan.commands == [["sbatch", "--parsable", str(tmp_path / "client.sbatch")]]
    assert subprocess.run(["bash", "-n"], input=client_script(clients, SlurmOptions(), tmp_path, Path("e.json")),
                          text=True, check=False).returncode == 0  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"servers": 0}, "servers must be an integer >= 1, got 0"),
        ({"runtime": "docker"}, "runtime must be one of apptainer, singularity, local, native, got 'docker'"),
        ({"runtime": "apptainer"}, "runtime 'apptainer' needs image="),
        ({"runtime": "local", "gpus_per_server": -1}, "gpus_per_server must be >= 0"),
        ({"runtime": "local", "name": "triton server"}, "name must be letters, digits"),
    ],
)
def test_bad_server_specs_name_the_field(kwargs, message):
    with pytest.raises(CloudConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ServerJobs(repository="/repo", **kwargs)


def test_extra_sbatch_options_must_be_single_options():
    with pytest.raises(CloudConfigError, match="one option such as '--exclusive'"):
        SlurmOptions(extra=("exclusive",))
    with pytest.raises(CloudConfigError, match="one option such as '--exclusive'"):
        SlurmOptions(extra=("--exclusive\n#SBATCH --nodes=9",))
