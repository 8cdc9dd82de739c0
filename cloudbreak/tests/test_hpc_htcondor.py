"""HTCondor submit descriptions, DAGs and the server job wrapper, checked with the real bindings.

No HTCondor daemons run here (Debian 12 has none): every submit description is parsed by
``htcondor2.Submit``, which accepts any value, so every expression is also parsed by
``classad2.ExprTree`` (which rejects malformed ones) and the keys are checked one by one.
The DAG is written by ``htcondor2.dags.write_dag``. The server job's wrapper script runs
for real against a fake ``condor_chirp`` that copies files as the real one does.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

htcondor2 = pytest.importorskip("htcondor2")
classad2 = pytest.importorskip("classad2")

from hermes.aeriel import load_endpoints  # noqa: E402
from hermes.cloudbreak import CloudConfigError  # noqa: E402
from hermes.cloudbreak.hpc import ClientJobs, CondorOptions, CondorScheduler, HpcDeployment, ServerJobs  # noqa: E402

HERMES = str(Path(sys.executable).parent / "hermes")
IMAGE = "/cvmfs/singularity.opensciencegrid.org/ml4gw/hermes/tritonserver:24.10"
IGWN = CondorOptions(accounting_group="ligo.dev.o4.cbc.allsky.aframe", accounting_group_user="albert.einstein",
                     requirements='(TARGET.CUDACapability >= 7.0) && (TARGET.HasSingularity =?= true)',
                     rank="TARGET.Memory")  # fmt: skip
SERVER_KEYS = {
    "universe", "initialdir", "executable", "arguments", "should_transfer_files", "when_to_transfer_output",
    "transfer_output_files", "transfer_output_remaps", "output", "error", "log", "request_cpus", "request_gpus",
    "JobBatchName", "MY.WantIOProxy", "MY.HermesRole", "transfer_input_files", "request_memory",
    "MY.SingularityImage", "accounting_group", "accounting_group_user", "requirements", "rank",
}  # fmt: skip
EXPRESSIONS = ("requirements", "rank", "MY.WantIOProxy", "MY.HermesRole", "MY.SingularityImage")


def parse(text: str) -> dict[str, str]:
    return dict(htcondor2.Submit(text))


def test_server_submit_description_has_the_igwn_keys_and_valid_expressions(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    servers = ServerJobs(repository=str(repo), servers=3, runtime="native", image=IMAGE, models=("aframe-stream",),
                         gpus_per_server=2, cpus_per_server=8, memory="32GB")  # fmt: skip
    plan = CondorScheduler(IGWN).server_plan(servers, tmp_path / "run")
    text = plan.files[tmp_path / "run" / "servers.sub"]
    submit = parse(text)
    assert set(submit) == SERVER_KEYS
    assert text.rstrip().endswith("queue 3")
    assert (
        submit["request_gpus"] == "2" and submit["request_cpus"] == "8" and submit["request_memory"] == "32GB"
    )
    assert submit["accounting_group"] == "ligo.dev.o4.cbc.allsky.aframe"
    assert submit["accounting_group_user"] == "albert.einstein"
    assert submit["transfer_input_files"] == str(repo)  # no shared filesystem: the repository travels
    for key in EXPRESSIONS:
        classad2.ExprTree(submit[key])  # raises ClassAdException on a malformed expression
    assert classad2.ExprTree(submit["MY.SingularityImage"]).eval() == IMAGE
    assert classad2.ExprTree(submit["MY.WantIOProxy"]).eval() is True
    script = plan.files[tmp_path / "run" / "hermes-server-job.sh"]
    assert (
        "hermes serve repo --runtime native" in script
    )  # the image's own hermes, the transferred repository
    assert "--endpoints-file endpoints.json" in script and "--model aframe-stream" in script
    assert plan.commands == [["condor_submit", str(tmp_path / "run" / "servers.sub")]]


def test_malformed_expressions_and_plus_attributes_are_refused_before_anything_is_written():
    with pytest.raises(CloudConfigError, match=r"requirements is not a valid ClassAd expression: '\(\(GPUs'"):
        CondorOptions(requirements="((GPUs")
    with pytest.raises(CloudConfigError, match=r"write custom attributes as MY\.Name"):
        CondorOptions(extra={"+ProjectName": '"x"'})


def test_client_dag_is_written_by_htcondor_dags_and_gates_every_client_on_the_endpoints(tmp_path):
    servers = ServerJobs(repository="osdf:///igwn/cit/aframe/repo", servers=2, runtime="native", image=IMAGE)
    deployment = HpcDeployment(CondorScheduler(IGWN), servers, tmp_path / "run")
    clients = ClientJobs(command=("/usr/bin/python3", "infer.py", "--shift", "1 s"),
                         segments=((1e9, 1e9 + 4096), (1e9 + 4096, 1e9 + 8192), (1e9 + 9000, 1e9 + 9100)))  # fmt: skip
    plan = deployment.client_plan(clients)
    run = tmp_path / "run"
    dag = plan.files[run / "clients" / "clients.dag"]
    assert "JOB endpoints:0 endpoints.sub" in dag
    assert "PARENT endpoints:0 CHILD clients:0 clients:1 clients:2" in dag
    assert list(re.findall(r'VARS (clients:\d) task="(\d)"', dag)) == [("clients:0", "0"), ("clients:1", "1"),
                                                                            ("clients:2", "2")]  # fmt: skip
    wait = parse(plan.files[run / "clients" / "endpoints.sub"])
    assert wait["universe"] == "local"
    assert wait["arguments"] == f'"hpc wait-endpoints {run} --servers 2 --timeout 3600"'
    client = parse(plan.files[run / "clients" / "clients.sub"])
    assert client["arguments"] == "\"infer.py --shift '1 s'\""
    assert client["transfer_input_files"] == f"{run}/endpoints.json, {run}/clients/segments-$(task).json"
    assert client["accounting_group"] == "ligo.dev.o4.cbc.allsky.aframe"
    classad2.ExprTree(client["requirements"])
    assert json.loads(plan.files[run / "clients" / "segments-0.json"]) == [[1e9, 1e9 + 4096]]
    assert plan.commands == [["condor_submit_dag", str(run / "clients" / "clients.dag")]]
    assert "SUBDAG" not in dag and "SCRIPT" not in dag


def test_dry_run_prints_exactly_the_files_and_commands_of_the_api(tmp_path):
    run = tmp_path / "run"
    segments = tmp_path / "segments.json"
    segments.write_text("[[0, 64], [64, 128]]")
    proc = subprocess.run(
        [HERMES, "hpc", "up", "osdf:///igwn/repo", "--scheduler", "htcondor", "--servers", "2", "--runtime",
         "native", "--image", IMAGE, "--workdir", str(run), "--accounting-group", IGWN.accounting_group,
         "--accounting-group-user", IGWN.accounting_group_user, "--requirements", IGWN.requirements,
         "--client", "/usr/bin/python3 infer.py", "--segments", str(segments), "--dry-run"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    printed: dict[str, str] = {}
    commands: list[str] = []
    current = None
    for line in proc.stdout.splitlines():
        if line.startswith("# ---- file "):
            current = line.removeprefix("# ---- file ")
            printed[current] = ""
        elif line == "# ---- commands":
            current = None
        elif current is not None:
            printed[current] += line + "\n"
        else:
            commands.append(line)
    servers = ServerJobs(repository="osdf:///igwn/repo", servers=2, runtime="native", image=IMAGE)
    deployment = HpcDeployment(CondorScheduler(CondorOptions(
        accounting_group=IGWN.accounting_group, accounting_group_user=IGWN.accounting_group_user,
        requirements=IGWN.requirements)), servers, run)  # fmt: skip
    expected = {**deployment.plan().files,
                **deployment.client_plan(ClientJobs(command=("/usr/bin/python3", "infer.py"),
                                                    segments=((0, 64), (64, 128)))).files}  # fmt: skip
    assert printed == {str(k): v for k, v in expected.items()}
    assert commands == [f"condor_submit {run}/servers.sub", f"condor_submit_dag {run}/clients/clients.dag"]
    for path, text in printed.items():
        if path.endswith(".sub"):
            parse(text)
    assert not run.exists()  # a dry run writes nothing


FAKE_CHIRP = """#!/bin/sh
# condor_chirp as hermes uses it (HTCondor manual, condor_chirp: "put [-mode mode] [-perm perm]
# local_file remote_file" copies into the job's submit directory; "set_job_attr JobAttributeName
# AttributeValue" sets an attribute of the job ad).
case "$1" in
  put) mkdir -p "$(dirname "$FAKE_IWD/$3")" && cp "$2" "$FAKE_IWD/$3.tmp" && mv "$FAKE_IWD/$3.tmp" "$FAKE_IWD/$3" ;;
  set_job_attr) printf '%s = %s\\n' "$2" "$3" >> "$FAKE_IWD/job.ad" ;;
  *) echo "condor_chirp: unknown command $1" >&2; exit 1 ;;
esac
"""


def test_server_job_wrapper_publishes_endpoints_by_chirp_and_stops_on_sigterm(tmp_path):
    """The wrapper as an execute node runs it: scratch dir with the transferred repository."""
    from cloudbreak_fakes_repo import write_add_one

    iwd, scratch, bindir = tmp_path / "submit", tmp_path / "scratch", tmp_path / "bin"
    for d in (iwd, scratch, bindir):
        d.mkdir()
    write_add_one(scratch / "repo")
    chirp = bindir / "condor_chirp"
    chirp.write_text(FAKE_CHIRP)
    chirp.chmod(0o755)
    servers = ServerJobs(repository=str(tmp_path / "repo"), runtime="local", gpus_per_server=0,
                         address="127.0.0.1", advertise="127.0.0.1")  # fmt: skip
    plan = CondorScheduler().server_plan(servers, iwd)
    wrapper = scratch / "hermes-server-job.sh"
    wrapper.write_text(plan.files[iwd / "hermes-server-job.sh"])
    wrapper.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "FAKE_IWD": str(iwd)}
    job = subprocess.Popen([str(wrapper), "42.1"], cwd=scratch, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while (
            not (iwd / "endpoints" / "42.1.json").exists()
            and job.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        [endpoint] = load_endpoints(iwd / "endpoints" / "42.1.json")
        assert endpoint.name == "condor-42.1" and endpoint.grpc.startswith("127.0.0.1:")
        while not (iwd / "job.ad").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        name, _, value = (iwd / "job.ad").read_text().strip().partition(" = ")
        assert name == "HermesEndpoints"
        assert load_endpoints(json.loads(classad2.ExprTree(value).eval())) == [endpoint]
    finally:
        job.send_signal(signal.SIGTERM)
        out, _ = job.communicate(timeout=60)
    assert job.returncode == 0, out
    assert "received SIGTERM; stopping tritonserver" in out
    assert not (scratch / "endpoints.json").exists()
