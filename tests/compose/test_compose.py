"""docker-compose.yml end to end, as a user runs it: `docker compose up -d` (no build, no pull: the
images come from deploy/images.sh and are named in .env) on free host ports with three consumers;
the challenge's files through the compose API and the AWS CLI into compose's S3; both metrics equal
tests/data/globant-2021.json; non-root, read-only containers; SIGTERM drains a consumer; one
upload's trace reaches the OTLP receiver across both services; `down -v` leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from urllib3 import encode_multipart_formdata

from services.dev.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
EXPECTED = json.loads((DATA / "globant-2021.json").read_text())
APP_SERVICES = ("ingest", "query")
T = TypeVar("T")


def compose_command() -> list[str]:
    """HIRING_COMPOSE (e.g. `docker-compose`), else the `docker compose` plugin, else docker-compose."""
    chosen = os.environ.get("HIRING_COMPOSE", "").split()
    if chosen:
        return chosen
    if subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither `docker compose` nor `docker-compose` is installed")


@dataclass
class Compose:
    name: str
    base: list[str]
    env: dict[str, str]
    api: str
    aws: str
    jaeger: str
    volumes_before: set[str]

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        proc = subprocess.run(
            [*self.base, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            message = f"{' '.join(args)} failed ({proc.returncode})"
            raise AssertionError(f"{message}:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def containers(self, service: str) -> list[str]:
        return self.run("ps", "-q", service).split()


def docker(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


def inspect(container: str) -> dict[str, Any]:
    return dict(json.loads(docker("inspect", container))[0])


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def eventually(probe: Callable[[], T], accept: Callable[[T], bool], wait: float, what: str) -> T:
    deadline = time.monotonic() + wait
    last: T | Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if accept(value):
                return value
            last = value
        except (OSError, ValueError, KeyError) as exc:  # URLError and HTTPError are OSErrors
            last = exc
        time.sleep(1)
    raise AssertionError(f"timed out after {wait:.0f}s waiting for {what}; last: {last!r}")


def upload(api: str, *paths: Path) -> list[dict[str, Any]]:
    fields = [("file", (p.name, p.read_bytes(), "text/csv")) for p in paths]
    body, content_type = encode_multipart_formdata(fields)
    return list(http("POST", f"{api}/upload", body, {"Content-Type": content_type})["uploads"])


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compose]:
    name = f"hiringe2e{os.getpid()}"
    ports = {var: str(free_port()) for var in ("API", "PG", "AWS", "JAEGER", "OTLP")}
    env = {**os.environ, **{f"HIRING_{k}_PORT": v for k, v in ports.items()}}
    base = [*compose_command(), "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml")]
    project = Compose(
        name=name,
        base=[*base, "-p", name],
        env=env,
        api=f"http://127.0.0.1:{ports['API']}",
        aws=f"http://127.0.0.1:{ports['AWS']}",
        jaeger=f"http://127.0.0.1:{ports['JAEGER']}",
        volumes_before=set(docker("volume", "ls", "-q").split()),
    )
    try:
        project.run("up", "-d", "--no-build", "--scale", "ingest=3", timeout=600)
        eventually(lambda: http("GET", f"{project.api}/readyz"), lambda _: True, 180, "the compose API ready")
        yield project
    finally:
        log = tmp_path_factory.mktemp("compose") / "compose.log"
        log.write_text(project.run("logs", "--no-color", "--tail", "300", check=False))
        print(f"compose logs: {log}")
        project.run("down", "-v", "--remove-orphans", "-t", "60", check=False)


def test_challenge_files_give_the_expected_metrics(compose: Compose) -> None:
    """Two files through the API, one into the bucket with the AWS CLI: both metrics as expected."""
    uploads = upload(compose.api, DATA / "globant" / "departments.csv", DATA / "globant" / "jobs.csv")
    assert [u["table"] for u in uploads] == ["departments", "jobs"]
    aws = os.environ.get("HIRING_AWS_CLI", "") or shutil.which("aws")
    assert aws, "the AWS CLI is needed (pip install awscli, or HIRING_AWS_CLI=/path/to/aws)"
    aws_env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    subprocess.run(
        [aws, "--endpoint-url", compose.aws, "s3", "cp", str(DATA / "globant" / "hired_employees.csv"),
         "s3://globant-raw-data/hired_employees/2021.csv"],
        env=aws_env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    eventually(
        lambda: http("GET", f"{compose.api}/metrics/hires?year=2021"),
        lambda got: got == EXPECTED["hires"],
        240,
        "GET /metrics/hires to equal tests/data/globant-2021.json",
    )
    assert http("GET", f"{compose.api}/metrics/departments?year=2021") == EXPECTED["departments"]
    assert len(compose.containers("ingest")) == 3


def test_containers_are_non_root_with_a_read_only_root(compose: Compose) -> None:
    for service in APP_SERVICES:
        for container in compose.containers(service):
            info = inspect(container)
            assert info["Config"]["User"] == "10001:10001", service
            assert info["HostConfig"]["ReadonlyRootfs"] is True, service
            probe = (
                "import os, tempfile; print(os.getuid())\n"
                "tempfile.TemporaryFile().close()\n"
                "try:\n    open('/probe', 'w')\nexcept OSError as e:\n    print(e.strerror)"
            )
            out = docker("exec", container, "python", "-c", probe).split("\n")
            assert out[0] == "10001", (service, out)
            assert out[1] == "Read-only file system", (service, out)


def test_one_upload_is_one_trace_across_both_services(compose: Compose) -> None:
    """The consumer's trace (the upload's trace_id) links to the API's POST /upload span."""
    (up,) = upload(compose.api, DATA / "globant" / "jobs.csv")
    status = eventually(
        lambda: http("GET", f"{compose.api}/uploads/{up['id']}"),
        lambda s: s["status"] == "loaded" and bool(s.get("trace_id")),
        120,
        "the upload loaded, with its trace id",
    )
    consumer = eventually(
        lambda: http("GET", f"{compose.jaeger}/api/traces/{status['trace_id']}")["data"][0],
        lambda t: any(
            r["refType"] == "FOLLOWS_FROM" and r["traceID"] != status["trace_id"]
            for s in t["spans"]
            for r in s["references"]
        ),
        60,
        "the consumer's trace, linked to the upload's request",
    )
    assert {p["serviceName"] for p in consumer["processes"].values()} == {"hiring-ingest"}
    linked = {
        r["traceID"]
        for s in consumer["spans"]
        for r in s["references"]
        if r["refType"] == "FOLLOWS_FROM" and r["traceID"] != status["trace_id"]
    }

    def request_spans() -> list[dict[str, Any]]:
        return [
            span
            for trace_id in linked
            for trace in http("GET", f"{compose.jaeger}/api/traces/{trace_id}")["data"]
            for span in trace["spans"]
            if trace["processes"][span["processID"]]["serviceName"] == "hiring-query"
        ]

    # The API's spans reach Jaeger on its own exporter's schedule, not with the consumer's: the
    # linked trace may answer 404 for a while.
    eventually(
        request_spans,
        lambda spans: any(s["operationName"] == "POST /upload" for s in spans),
        60,
        "the API's POST /upload span in the linked trace",
    )


def test_sigterm_drains_the_consumers_and_nothing_is_lost(compose: Compose, tmp_path: Path) -> None:
    """`compose stop` (SIGTERM, as ECS sends) while a big file is being applied: every consumer
    exits 0 within its grace period after draining; started again, the file ends with every row."""
    rows = 200_000
    big = tmp_path / "hired_employees.csv"
    # ids and department/job ids the challenge files do not use: the metrics stay as they are
    big.write_text("".join(f"{2_000_000 + i},P {i},2021-03-04T05:06:07Z,9999,9999\n" for i in range(rows)))
    (up,) = upload(compose.api, big)
    eventually(
        lambda: http("GET", f"{compose.api}/uploads/{up['id']}")["status"],
        lambda s: s in ("processing", "loaded"),
        120,
        "the big file being applied",
    )
    consumers = compose.containers("ingest")
    started = time.monotonic()
    compose.run("stop", "-t", "60", "ingest")
    took = time.monotonic() - started
    logs = ""
    for container in consumers:
        state = inspect(container)["State"]
        assert state["Running"] is False and state["ExitCode"] == 0, state
        proc = subprocess.run(["docker", "logs", container], capture_output=True, text=True, check=False)
        logs += proc.stdout + proc.stderr
    assert took < 55, f"the consumers needed {took:.0f}s: they did not stop on SIGTERM"
    assert logs.count('"consumer stopped"') == len(consumers), logs[-3000:]
    if http("GET", f"{compose.api}/uploads/{up['id']}")["status"] != "loaded":
        assert '"draining"' in logs, logs[-3000:]  # it was in flight: drained, then handed back
    compose.run("start", "ingest")
    done = eventually(
        lambda: http("GET", f"{compose.api}/uploads/{up['id']}"),
        lambda s: s["status"] == "loaded",
        240,
        "the big file loaded after the restart",
    )
    assert (done["rows_loaded"], done["rows_rejected"]) == (rows, 0)


def test_down_leaves_nothing(compose: Compose) -> None:
    compose.run("down", "-v", "--remove-orphans", "-t", "60")
    label = f"label=com.docker.compose.project={compose.name}"
    assert docker("ps", "-aq", "--filter", label).split() == []
    assert docker("network", "ls", "-q", "--filter", label).split() == []
    assert docker("volume", "ls", "-q", "--filter", label).split() == []
    # anonymous volumes (images declare VOLUMEs) are removed by -v too
    assert set(docker("volume", "ls", "-q").split()) <= compose.volumes_before


def test_image_tmp_is_writable_on_an_empty_root_owned_volume() -> None:
    """Fargate mounts an empty volume at /tmp, owned by root with mode 0755 unless the image declares
    /tmp a volume (then it copies the image's mode). A fresh Docker volume is that empty root-owned
    directory and is filled the same way: user 10001, read-only root, must still get temp files."""
    image = os.environ.get("HIRING_APP_IMAGE", "") or "hiring-pipeline:local"
    volume = docker("volume", "create").strip()
    try:
        probe = (
            "import os, stat, tempfile\n"
            "st = os.stat('/tmp')\n"
            "print(oct(stat.S_IMODE(st.st_mode)), st.st_uid, os.getuid())\n"
            "with tempfile.NamedTemporaryFile() as f: print(f.name.startswith('/tmp/'))"
        )
        out = docker(
            "run", "--rm", "--read-only", "-v", f"{volume}:/tmp", "--entrypoint", "python", image, "-c", probe
        ).split()
        assert out == ["0o1777", "0", "10001", "True"], out
        assert "/tmp" in inspect_image(image)["Config"]["Volumes"]
    finally:
        docker("volume", "rm", volume, check=False)


def inspect_image(image: str) -> dict[str, Any]:
    return dict(json.loads(docker("image", "inspect", image))[0])
