"""Stubbed Greengrass v2 exchanges: the responses and the exact requests publish() is expected to make."""

from __future__ import annotations

import datetime

from .loopback import COMPONENT_NAME, COMPONENT_VERSION

ACCOUNT = "123456789012"
COMPONENT_ARN = f"arn:aws:greengrass:us-east-1:{ACCOUNT}:components:{COMPONENT_NAME}"
VERSION_ARN = f"{COMPONENT_ARN}:versions:{COMPONENT_VERSION}"
TAGS = {"project": "casting-inspection", "owner": "quality-team"}
WHEN = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def expect_not_registered(stub) -> None:
    stub.add_response("list_components", {"components": []}, {"scope": "PRIVATE"})


def expect_registered(stub, recipe_text: str, state: str = "DEPLOYABLE") -> None:
    stub.add_response(
        "list_components",
        {
            "components": [
                {
                    "arn": COMPONENT_ARN,
                    "componentName": COMPONENT_NAME,
                    "latestVersion": {"arn": VERSION_ARN, "componentVersion": COMPONENT_VERSION},
                }
            ]
        },
        {"scope": "PRIVATE"},
    )
    stub.add_response(
        "describe_component",
        {
            "arn": VERSION_ARN,
            "componentName": COMPONENT_NAME,
            "componentVersion": COMPONENT_VERSION,
            "creationTimestamp": WHEN,
            "status": {"componentState": state, "message": "artifact not accessible" if state == "FAILED" else "NONE"},
        },
        {"arn": VERSION_ARN},
    )
    stub.add_response(
        "get_component",
        {"recipeOutputFormat": "YAML", "recipe": recipe_text.encode()},
        {"arn": VERSION_ARN, "recipeOutputFormat": "YAML"},
    )


def expect_create(stub, recipe_text: str, tags: dict[str, str] | None = TAGS) -> None:
    expected = {"inlineRecipe": recipe_text.encode("utf-8")}
    if tags:
        expected["tags"] = tags
    stub.add_response(
        "create_component_version",
        {
            "arn": VERSION_ARN,
            "componentName": COMPONENT_NAME,
            "componentVersion": COMPONENT_VERSION,
            "creationTimestamp": WHEN,
            "status": {"componentState": "REQUESTED"},
        },
        expected,
    )
