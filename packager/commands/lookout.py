"""The Lookout for Vision commands, shaped like `aws lookoutvision ...`: one flag per request member,
--cli-input-json/--cli-input-yaml (flags override the document), --generate-cli-skeleton, JSON output.

Three layers: argparse flags -> `request_from_args` (a params dict in the service's names) -> packager.service.jobs.api.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import time
from functools import partial
from pathlib import Path

import packager.service_model as service_model
from packager.commands.command import Command
from packager.errors import ValidationException

# Operation -> one-line help; the order is the order `--help` lists them in.
_OPERATIONS = {
    "StartModelPackagingJob": "Start packaging a model version as a Greengrass v2 component (returns the JobName at once).",
    "DescribeModelPackagingJob": "Show a packaging job: status, configuration and output component.",
    "ListModelPackagingJobs": "List a project's packaging jobs.",
    "CreateProject": "Create an empty project.",
    "DescribeProject": "Show a project.",
    "ListProjects": "List projects.",
    "DeleteProject": "Delete a project with its model versions and job records.",
    "DescribeModel": "Show a model version (ModelVersion 'latest' is the highest).",
    "ListModels": "List a project's model versions.",
    "DeleteModel": "Delete a model version.",
}
_TERMINAL = ("SUCCEEDED", "FAILED")


def flag_name(member: str) -> str:
    """ModelVersion -> --model-version, as the AWS CLI spells members."""
    return "--" + re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", member).lower()


def command_name(operation: str) -> str:
    return flag_name(operation)[2:]


def _load_value(text: str) -> str:
    """file://PATH reads the value from a file, as the AWS CLI does."""
    if text.startswith("file://"):
        path = Path(text[len("file://") :]).expanduser()
        try:
            return path.read_text().rstrip("\n")
        except OSError as exc:
            raise ValidationException(f"cannot read {path}: {exc.strerror}", field=str(path)) from None
    return text


def _member_value(member: service_model.Member, text: str):
    kind = service_model.shape(member.shape)["type"]
    text = _load_value(text)
    if kind in ("structure", "list", "map"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationException(f"{flag_name(member.name)}: not valid JSON ({exc})", field=member.name) from None
    if kind in ("integer", "long"):
        try:
            return int(text)
        except ValueError:
            raise ValidationException(
                f"{flag_name(member.name)}: expected an integer, got {text!r}", field=member.name
            ) from None
    return text


def _input_document(args: argparse.Namespace) -> dict:
    if args.cli_input_json is not None and args.cli_input_yaml is not None:
        raise ValidationException("give --cli-input-json or --cli-input-yaml, not both", field="--cli-input-json")
    if args.cli_input_json is not None:
        try:
            doc = json.loads(_load_value(args.cli_input_json))
        except json.JSONDecodeError as exc:
            raise ValidationException(f"--cli-input-json: not valid JSON ({exc})", field="--cli-input-json") from None
    elif args.cli_input_yaml is not None:
        import yaml

        try:
            doc = yaml.safe_load(_load_value(args.cli_input_yaml))
        except yaml.YAMLError as exc:
            raise ValidationException(f"--cli-input-yaml: not valid YAML ({exc})", field="--cli-input-yaml") from None
    else:
        return {}
    if not isinstance(doc, dict):
        raise ValidationException(
            "the CLI input document must be an object of request members", field="--cli-input-json"
        )
    return doc


def request_from_args(operation: str, args: argparse.Namespace) -> dict:
    """The request: the input document, then each flag given on the command line on top of it."""
    shape_name = service_model.operation(operation).input_shape
    params = _input_document(args)
    for member in service_model.members(shape_name):
        text = getattr(args, member.name)
        if text is not None:
            params[member.name] = _member_value(member, text)
    missing = [flag_name(m) for m in service_model.required_members(shape_name) if params.get(m) is None]
    if missing:
        raise ValidationException(f"the following arguments are required: {', '.join(missing)}", field=missing[0][2:])
    return params


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", choices=("json", "yaml", "table"), default="json", help="output format (default: json)"
    )
    parser.add_argument(
        "--cli-timestamp-format",
        choices=("iso8601", "wire"),
        default="iso8601",
        help="timestamps as ISO 8601 (default) or as epoch seconds, as they travel on the wire",
    )


def add_operation_arguments(operation: str, parser: argparse.ArgumentParser) -> None:
    shape_name = service_model.operation(operation).input_shape
    required = set(service_model.required_members(shape_name))
    for member in service_model.members(shape_name):
        kind = service_model.shape(member.shape)["type"]
        hint = " (JSON, or file://PATH)" if kind in ("structure", "list", "map") else ""
        parser.add_argument(
            flag_name(member.name),
            dest=member.name,
            metavar="VALUE",
            help=f"{'[required] ' if member.name in required else ''}{member.summary}{hint}".replace("%", "%%"),
        )
    parser.add_argument(
        "--cli-input-json", metavar="JSON", help="the request as JSON (or file://PATH); flags override it"
    )
    parser.add_argument(
        "--cli-input-yaml", metavar="YAML", help="the request as YAML (or file://PATH); flags override it"
    )
    parser.add_argument(
        "--generate-cli-skeleton",
        nargs="?",
        const="input",
        choices=("input", "yaml-input", "output"),
        help="print a template of the request (input, yaml-input) or of the response (output), then exit",
    )
    _add_output_arguments(parser)
    if operation == "StartModelPackagingJob":
        parser.add_argument(
            "--wait", action="store_true", help="wait for SUCCEEDED or FAILED, showing progress on stderr"
        )
        parser.add_argument("--poll-seconds", type=float, default=1.0, help=argparse.SUPPRESS)


def _timestamps(value, fmt: str):
    if isinstance(value, dt.datetime):
        return value.isoformat() if fmt == "iso8601" else value.timestamp()
    if isinstance(value, dict):
        return {k: _timestamps(v, fmt) for k, v in value.items()}
    if isinstance(value, list):
        return [_timestamps(v, fmt) for v in value]
    return value


def print_response(response: dict, args: argparse.Namespace, title: str) -> None:
    doc = _timestamps({k: v for k, v in response.items() if k != "ResponseMetadata"}, args.cli_timestamp_format)
    if args.output == "yaml":
        import yaml

        sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))
    elif args.output == "table":
        sys.stdout.write(render_table(title, doc))
    else:
        print(json.dumps(doc, indent=4))


def _skeleton(operation: str, kind: str) -> str:
    op = service_model.operation(operation)
    if kind == "yaml-input":
        return service_model.yaml_skeleton(op.input_shape) + "\n"
    return json.dumps(service_model.skeleton(op.output_shape if kind == "output" else op.input_shape), indent=4) + "\n"


def _progress_line(started: float, description: dict) -> None:
    elapsed = time.monotonic() - started
    print(
        f"[{elapsed:7.1f}s] {description['Status']:<9} {description.get('StatusMessage', '')}",
        file=sys.stderr,
        flush=True,
    )


def run_operation(operation: str, args: argparse.Namespace) -> int:
    from packager.service.jobs import api

    if args.generate_cli_skeleton:
        sys.stdout.write(_skeleton(operation, args.generate_cli_skeleton))
        return 0
    params = request_from_args(operation, args)
    response = api.OPERATIONS[operation](**params)
    if operation == "StartModelPackagingJob" and args.wait:
        job = response["JobName"]
        print(
            f"Waiting for job {job} in project {params['ProjectName']} (Ctrl-C stops waiting, not the job)",
            file=sys.stderr,
            flush=True,
        )
        response = api.wait_for_model_packaging_job(
            params["ProjectName"],
            job,
            poll_seconds=args.poll_seconds,
            on_update=partial(_progress_line, time.monotonic()),
        )
        print_response(response, args, "DescribeModelPackagingJob")
        if response["ModelPackagingDescription"]["Status"] == "FAILED":
            print(
                f"error: job {job} FAILED: {response['ModelPackagingDescription'].get('StatusMessage', '')}",
                file=sys.stderr,
            )
            return 1
        return 0
    print_response(response, args, operation)
    return 0


def add_register_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--project-name", required=True, metavar="VALUE", help="the project to add the model version to"
    )
    parser.add_argument("--model", required=True, type=Path, metavar="PATH", help="the trained model (.onnx)")
    parser.add_argument("--spec", type=Path, metavar="PATH", help="the model spec JSON (inputs, outputs, thresholds)")
    parser.add_argument("--description", metavar="VALUE", help="model description ([0-9A-Za-z._-], up to 500)")
    parser.add_argument("--create-project", action="store_true", help="create the project if it does not exist")
    _add_output_arguments(parser)


def run_register(args: argparse.Namespace) -> int:
    from packager.service.jobs import api

    response = api.register_model(
        args.project_name, args.model, args.spec, description=args.description, create_project=args.create_project
    )
    print_response(response, args, "RegisterModel")
    return 0


def render_table(title: str, doc: dict) -> str:
    """A boxed text table in the spirit of `--output table`: scalars as rows, lists of objects as columns."""
    return "\n".join(_table_lines(title, doc)) + "\n"


def _cell(value) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _box(title: str, header: list[str] | None, rows: list[list[str]]) -> list[str]:
    widths = (
        [max(len(c) for c in column) for column in zip(*([header] if header else []), *rows)] if rows else [len(title)]
    )
    inner = max(sum(widths) + 3 * (len(widths) - 1), len(title))
    widths[-1] += inner - (sum(widths) + 3 * (len(widths) - 1))
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    lines = ["-" * (inner + 4), f"| {title.center(inner)} |", rule]
    if header:
        lines += ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |", rule]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    if rows:
        lines.append(rule)
    return lines


def _table_lines(title: str, doc: dict) -> list[str]:
    scalars = [[k, _cell(v)] for k, v in doc.items() if not isinstance(v, (dict, list))]
    lines = _box(title, None, scalars) if scalars or not doc else []
    for key, value in doc.items():
        if isinstance(value, dict):
            lines += _table_lines(key, value)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            columns = list(dict.fromkeys(k for item in value for k in item))
            lines += _box(key, columns, [[_cell(item.get(c, "")) for c in columns] for item in value])
        elif isinstance(value, list):
            lines += _box(key, None, [[_cell(v)] for v in value])
    return lines


COMMANDS: tuple[Command, ...] = tuple(
    Command(
        name=command_name(operation),
        help=help_text,
        add_arguments=partial(add_operation_arguments, operation),
        run=partial(run_operation, operation),
    )
    for operation, help_text in _OPERATIONS.items()
) + (
    Command(
        name="register-model",
        help="Register a trained ONNX model (plus spec) as a project's next model version.",
        add_arguments=add_register_arguments,
        run=run_register,
    ),
)
