"""What the team's job engine costs: Celery on Redis against the local worker processes, on one PostgreSQL store.

    python benchmarks/team_queue.py [--rounds 4] [--jobs 6] [--output-dir benchmarks/results]

Queue cost: from StartModelPackagingJob's call to the job's first stage ("importing ...") starting (timestamped by a
trigger in PostgreSQL, the same clock on this one machine), for the local
engine (a new worker process per job) and for Celery (a running `packager worker` takes it from Redis); rounds
alternate between the two so load on a shared machine hits both alike, and each job ends before the next starts.
Throughput: jobs per minute for --jobs jobs submitted at once, with 1 and with 2 workers, for both engines (the local
engine's worker count is PACKAGER_MAX_WORKERS). Every job packages the bundled example model for this host and
uploads it to moto's S3 on 127.0.0.1. PostgreSQL and Redis are started here, on free ports, with throw-away data.
Writes team_queue.json, team_queue.md and team_queue.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BUCKET = "bench-components"
MODEL_BUCKET = "bench-models"


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        name = platform.processor() or "unknown CPU"
    return f"{name}, {os.cpu_count()} cores"


class Bench:
    def __init__(self, root: Path, database_url: str, broker_url: str, s3_endpoint: str):
        import psycopg

        self.root = root
        self.database_url = database_url
        self.broker_url = broker_url
        self.db = psycopg.connect(database_url, autocommit=True)
        self.workers: list[subprocess.Popen] = []
        self.started: list[Path] = []
        self.version = 0
        os.environ.update(
            {
                "PACKAGER_HOME": str(root / "server"),
                "PACKAGER_DATABASE_URL": database_url,
                "PACKAGER_NO_REGISTER": "1",
                "AWS_ENDPOINT_URL_S3": s3_endpoint,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
                "PYTHONPATH": str(REPO),
                "PACKAGER_MODEL_BUCKET": MODEL_BUCKET,
            }
        )

    def use(self, engine: str, workers: int) -> None:
        """Send submissions to ``engine`` ("local" or "celery"); the local engine runs ``workers`` jobs at once."""
        os.environ["PACKAGER_MAX_WORKERS"] = str(workers)
        if engine == "local":
            os.environ.pop("PACKAGER_BROKER_URL", None)
        else:
            os.environ["PACKAGER_BROKER_URL"] = self.broker_url

    def start_celery_workers(self, count: int) -> None:
        """``count`` Celery workers, each as its own host (PACKAGER_HOME), each warmed up by one job."""
        self.stop_workers()
        for i in range(count):
            home = self.root / f"worker-{len(self.started)}"
            self.started.append(home)
            home.mkdir(parents=True, exist_ok=True)
            log = open(self.root / f"{home.name}.log", "ab")  # noqa: SIM115  (the worker writes it until it stops)
            self.workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "packager", "worker", "--hostname", f"bench-{i}@%h"],
                    env={
                        **os.environ,
                        "PACKAGER_HOME": str(home),
                        "PACKAGER_MAX_WORKERS": "1",
                        "PACKAGER_BROKER_URL": self.broker_url,
                    },
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            )
        engine = os.environ.get("PACKAGER_BROKER_URL")
        os.environ["PACKAGER_BROKER_URL"] = self.broker_url
        self.wait_final(
            [self.submit() for _ in range(count)]
        )  # the first job on a host imports TVM and fetches the model
        if engine is None:
            os.environ.pop("PACKAGER_BROKER_URL")

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.terminate()
        for worker in self.workers:
            worker.wait(timeout=60)
        self.workers = []

    def submit(self) -> str:
        from packager.service.jobs import api

        self.version += 1
        configuration = {
            "Greengrass": {
                "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"},
                "ComponentName": "com.bench.Queue",
                "ComponentVersion": f"1.0.{self.version}",
                "S3OutputLocation": {"Bucket": BUCKET, "Prefix": "bench"},
            }
        }
        return api.start_model_packaging_job(ProjectName="bench", ModelVersion="1", Configuration=configuration)[
            "JobName"
        ]

    def row(self, job: str) -> tuple[str, str]:
        return self.db.execute("SELECT status, status_message FROM jobs WHERE name = %s", (job,)).fetchone()

    def wait_final(self, jobs: list[str], timeout: float = 1200) -> None:
        deadline = time.monotonic() + timeout
        pending = set(jobs)
        while pending:
            for job in list(pending):
                status, message = self.row(job)
                if status == "FAILED":
                    raise SystemExit(f"team_queue: job {job} failed: {message}")
                if status == "SUCCEEDED":
                    pending.discard(job)
            if time.monotonic() > deadline:
                raise SystemExit(f"team_queue: {len(pending)} jobs not done after {timeout} s")
            time.sleep(0.05)

    def record_stages(self) -> None:
        """A trigger that timestamps every StatusMessage a job gets, in the database, so no step is missed by polling."""
        self.db.execute("CREATE TABLE bench_events (name TEXT, message TEXT, at DOUBLE PRECISION)")
        self.db.execute("""CREATE FUNCTION bench_event() RETURNS trigger AS $$ BEGIN
            IF NEW.status_message IS DISTINCT FROM OLD.status_message THEN
                INSERT INTO bench_events VALUES (NEW.name, NEW.status_message, extract(epoch FROM clock_timestamp()));
            END IF; RETURN NEW; END $$ LANGUAGE plpgsql""")
        self.db.execute("CREATE TRIGGER bench_event AFTER UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION bench_event()")

    def queue_cost(self) -> float:
        """Seconds from the submit call to the first stage starting; waits for the job to end."""
        submitted = time.time()
        job = self.submit()
        self.wait_final([job])
        row = self.db.execute(
            "SELECT min(at) FROM bench_events WHERE name = %s AND message LIKE 'importing%%'", (job,)
        ).fetchone()
        if row[0] is None:
            raise SystemExit(f"team_queue: job {job} never reported its first stage")
        return row[0] - submitted

    def throughput(self, jobs: int) -> float:
        started = time.perf_counter()
        names = [self.submit() for _ in range(jobs)]
        self.wait_final(names)
        return jobs / (time.perf_counter() - started) * 60


def write_outputs(doc: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "team_queue.json").write_text(json.dumps(doc, indent=2) + "\n")
    q = doc["queue_cost_s"]
    load = doc.get("load_average_1_5_15", {})
    lines = [
        f"# Team job engine: queue cost and throughput\n\n{doc['machine']}. {doc['model']}. {doc['note']}\n",
        f"Load average (1, 5, 15 min) before: {load.get('before')}, after: {load.get('after')}.\n",
        "## Queue cost: submission to the first stage's start\n",
        "| engine | median s | min s | max s | samples |",
        "|---|---:|---:|---:|---:|",
    ]
    for engine, samples in q.items():
        lines.append(
            f"| {engine} | {statistics.median(samples):.3f} | {min(samples):.3f} | {max(samples):.3f} | {len(samples)} |"
        )
    lines += [
        "",
        f"## Throughput: {doc['jobs']} jobs submitted at once\n",
        "| engine | workers | jobs per minute |",
        "|---|---:|---:|",
    ]
    for key, value in doc["jobs_per_minute"].items():
        engine, workers = key.split(":")
        lines.append(f"| {engine} | {workers} | {value:.2f} |")
    (out / "team_queue.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.boxplot(list(q.values()), tick_labels=list(q))
    left.set_ylabel("seconds")
    left.set_title("submission to first stage")
    keys = list(doc["jobs_per_minute"])
    right.bar(
        range(len(keys)), [doc["jobs_per_minute"][k] for k in keys], tick_label=[k.replace(":", "\n") for k in keys]
    )
    right.set_ylabel("jobs per minute")
    right.set_title(f"{doc['jobs']} jobs at once")
    figure.tight_layout()
    figure.savefig(out / "team_queue.png", dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="queue-cost samples per engine (default 4)")
    parser.add_argument("--jobs", type=int, default=6, help="jobs per throughput run (default 6)")
    parser.add_argument("--output-dir", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)

    import boto3
    from moto.server import ThreadedMotoServer

    from packager.example_model import example_model_paths
    from packager.service.jobs import api
    from tests.servers import postgres_server, redis_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log would bury the results
    load_before = os.getloadavg()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{moto.get_host_and_port()[1]}"
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    for bucket in (BUCKET, MODEL_BUCKET):
        s3.create_bucket(Bucket=bucket)
    with postgres_server() as pg, redis_server() as redis, tempfile.TemporaryDirectory(prefix="team-queue-") as scratch:
        bench = Bench(Path(scratch), pg.create_database(), redis.url, endpoint)
        try:
            api.register_model("bench", *example_model_paths(), create_project=True)
            bench.record_stages()
            queue: dict[str, list[float]] = {"local": [], "celery": []}
            bench.start_celery_workers(1)
            bench.use("local", 1)
            bench.queue_cost()  # warm-up: the page cache and the server side's first imports
            for _ in range(args.rounds):
                for engine, samples in queue.items():
                    bench.use(engine, 1)
                    samples.append(bench.queue_cost())
                    print(f"queue cost {engine}: {samples[-1]:.3f} s", flush=True)
            per_minute = {}
            for workers in (1, 2):
                bench.use("local", workers)
                per_minute[f"local:{workers}"] = bench.throughput(args.jobs)
                print(f"local with {workers} workers: {per_minute[f'local:{workers}']:.2f} jobs/min", flush=True)
                bench.start_celery_workers(workers)
                bench.use("celery", workers)
                per_minute[f"celery:{workers}"] = bench.throughput(args.jobs)
                print(f"celery with {workers} workers: {per_minute[f'celery:{workers}']:.2f} jobs/min", flush=True)
        finally:
            bench.stop_workers()
            moto.stop()
    doc = {
        "machine": cpu_model(),
        "model": "the bundled example model, LINUX/X86_64, 50 benchmark runs per job, S3 upload",
        "note": "Both engines on one PostgreSQL store; Celery with Redis on 127.0.0.1.",
        "jobs": args.jobs,
        "queue_cost_s": queue,
        "jobs_per_minute": per_minute,
        "load_average_1_5_15": {"before": load_before, "after": os.getloadavg()},
    }
    write_outputs(doc, args.output_dir)
    print((args.output_dir / "team_queue.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
