"""The Lookout for Vision operations, once: the CLI, the Python client and the REST server all call these.

Projects and model versions are in packager/service/jobs/projects.py, packaging jobs in packaging.py; this module
is the one table from operation name to implementation, and the names callers import.
"""

from __future__ import annotations

from collections.abc import Callable

from packager.service.jobs.launcher import job_dir
from packager.service.jobs.operations import service_region
from packager.service.jobs.packaging import (
    describe_model_packaging_job,
    list_model_packaging_jobs,
    start_local_packaging_job,
    start_model_packaging_job,
    wait_for_model_packaging_job,
)
from packager.service.jobs.projects import (
    create_project,
    delete_model,
    delete_project,
    describe_model,
    describe_project,
    list_models,
    list_projects,
    register_model,
)

__all__ = [
    "create_project",
    "delete_model",
    "delete_project",
    "describe_model",
    "describe_model_packaging_job",
    "describe_project",
    "job_dir",
    "list_model_packaging_jobs",
    "list_models",
    "list_projects",
    "register_model",
    "service_region",
    "start_local_packaging_job",
    "start_model_packaging_job",
    "wait_for_model_packaging_job",
    "OPERATIONS",
]

# The one table from operation name to implementation, for the client, the server and the CLI.
OPERATIONS: dict[str, Callable[..., dict]] = {
    "StartModelPackagingJob": start_model_packaging_job,
    "DescribeModelPackagingJob": describe_model_packaging_job,
    "ListModelPackagingJobs": list_model_packaging_jobs,
    "CreateProject": create_project,
    "DescribeProject": describe_project,
    "ListProjects": list_projects,
    "DeleteProject": delete_project,
    "DescribeModel": describe_model,
    "ListModels": list_models,
    "DeleteModel": delete_model,
}
