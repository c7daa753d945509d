"""`python -m packager serve`: the Lookout for Vision REST API on a local port, for boto3 and the AWS CLI."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

from packager.commands.command import Command
from packager.errors import ValidationException


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080; 0 picks a free one)")
    parser.add_argument(
        "--access-key-id", default=None, help="the access key id clients sign with (default: $PACKAGER_ACCESS_KEY_ID)"
    )
    parser.add_argument(
        "--secret-access-key-file",
        type=Path,
        default=None,
        help="file holding the secret access key (default: $PACKAGER_SECRET_ACCESS_KEY)",
    )
    parser.add_argument(
        "--no-register",
        action="store_true",
        help="jobs upload to S3 but do not create Greengrass component versions "
        "(default: register, unless PACKAGER_NO_REGISTER=1)",
    )
    parser.add_argument(
        "--region",
        default=None,
        help="the only region requests may be signed for (default: $AWS_REGION, $AWS_DEFAULT_REGION or us-east-1)",
    )
    parser.add_argument("--quiet", action="store_true", help="do not log each request")


def _keys(args: argparse.Namespace) -> dict[str, str]:
    key_id = args.access_key_id or os.environ.get("PACKAGER_ACCESS_KEY_ID")
    if args.secret_access_key_file is not None:
        try:
            secret = args.secret_access_key_file.read_text().strip()
        except OSError as exc:
            raise ValidationException(f"--secret-access-key-file: {exc}", field="--secret-access-key-file") from None
    else:
        secret = os.environ.get("PACKAGER_SECRET_ACCESS_KEY")
    if not key_id or not secret:
        raise ValidationException(
            "serve needs an access key: set PACKAGER_ACCESS_KEY_ID and PACKAGER_SECRET_ACCESS_KEY "
            "(or --access-key-id and --secret-access-key-file)",
            field="PACKAGER_ACCESS_KEY_ID",
        )
    return {key_id: secret}


def run(args: argparse.Namespace) -> int:
    from packager.home import packager_home
    from packager.service.jobs.packaging import register_by_default
    from packager.service.server.app import ServerConfig, make_server

    keys = _keys(args)
    register = not args.no_register and register_by_default()
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        print(f"warning: serving on {args.host}, reachable beyond this machine, over plain HTTP", file=sys.stderr)
    try:
        server = make_server(
            args.host, args.port, ServerConfig(keys=keys, quiet=args.quiet, region=args.region, register=register)
        )
    except OSError as exc:
        raise ValidationException(f"cannot listen on {args.host}:{args.port}: {exc.strerror}", field="--port") from None
    host, port = server.server_address[:2]
    print(
        f"Serving the Lookout for Vision API at http://{host}:{port} (store: {packager_home()}); Ctrl-C stops.",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


COMMAND = Command(
    name="serve",
    help="Serve the Lookout for Vision REST API (SigV4-signed) on a local port.",
    add_arguments=add_arguments,
    run=run,
)
