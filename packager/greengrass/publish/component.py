"""publish(bundle) -> PublishedComponent: artifacts to S3 and verified, then the recipe, then the Greengrass version.

The order is what makes it safe: nothing is registered, and no recipe is written, before every artifact the recipe
names is proven to hold the bundle's bytes. A failed publish leaves at most verified or unverified artifacts behind,
never a recipe or a component version pointing at them, so running the same publish again completes it.

A component version counts as published once Greengrass has it or, when publishing without registration, once its
recipe is in S3 (``recipe.yaml`` beside the artifacts). With registration, Greengrass is the authority: a recipe in S3
whose registration never happened is a leftover of a failed run, like its artifacts. A published version's bytes are then immutable: different bytes at any of its keys raise ConflictException before anything
is uploaded. Different bytes at the keys of a version that is not published are leftovers of a failed run and are
overwritten.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import packager.greengrass.publish.greengrass as greengrass
import packager.greengrass.publish.s3 as s3
from packager.errors import ConflictException, ValidationException
from packager.greengrass.bundle import BundleArtifact, ComponentBundle, S3Location
from packager.greengrass.publish.aws_errors import aws_error
from packager.greengrass.publish.s3 import RemoteObject, RemoteState, TransferSettings

log = logging.getLogger(__name__)

RECIPE_FILE_NAME = "recipe.yaml"  # s3://<Bucket>/<Prefix>/<ComponentName>/<ComponentVersion>/recipe.yaml
RECIPE_CONTENT_TYPE = "application/yaml"


@dataclass(frozen=True)
class PublishedObject:
    key: str
    size: int
    sha256_b64: str  # full-object SHA-256, the recipe's Digest
    s3_checksum: str  # ChecksumSHA256 as S3 keeps it: "<b64>-<parts>" for a multipart object
    uploaded: bool  # False when the same bytes were already at the key


@dataclass(frozen=True)
class PublishedComponent:
    bucket: str
    component_name: str
    component_version: str
    artifacts: tuple[PublishedObject, ...]
    recipe: PublishedObject
    component_version_arn: str | None  # None when registration was skipped
    newly_registered: bool  # False when the same version was already registered, or registration was skipped

    @property
    def recipe_key(self) -> str:
        return self.recipe.key

    @property
    def uploaded_keys(self) -> tuple[str, ...]:
        return tuple(o.key for o in (*self.artifacts, self.recipe) if o.uploaded)

    @property
    def skipped_keys(self) -> tuple[str, ...]:
        return tuple(o.key for o in (*self.artifacts, self.recipe) if not o.uploaded)


def publish(
    bundle: ComponentBundle,
    s3_client,
    greengrass_client,
    *,
    tags: Mapping[str, str] | None = None,
    register: bool = True,
    region: str | None = None,
    transfer: TransferSettings | None = None,
    progress: bool = True,
    account_id: str | None = None,
) -> PublishedComponent:
    """Upload the bundle to its S3 location, verify it, write its recipe, and register it with Greengrass v2.
    ``account_id`` (greengrass.caller_account_id): check the registration with the documented calls only."""
    location = _validated_location(bundle)
    region = _publish_region(s3_client, greengrass_client, register, region)
    transfer = transfer or TransferSettings()

    # Checks: nothing is written until all of them pass.
    s3.check_bucket(s3_client, location.bucket, region)
    registered = None
    if register:
        registered = greengrass.find_registered_version(
            greengrass_client, bundle.component_name, bundle.component_version, account_id
        )
        _check_registered_matches(bundle, registered)
    return _publish_checked(
        bundle,
        s3_client,
        greengrass_client,
        location,
        registered,
        tags=tags,
        register=register,
        transfer=transfer,
        progress=progress,
    )


def publish_shared(
    bundle: ComponentBundle,
    s3_client,
    greengrass_client,
    *,
    tags: Mapping[str, str] | None = None,
    register: bool = True,
    region: str | None = None,
    transfer: TransferSettings | None = None,
    progress: bool = True,
    account_id: str | None = None,
) -> str | None:
    """Publish a component many jobs share (the Edge Agent) and return its version ARN (None when not registering).

    A version already registered with the same artifact names and digests is reused wherever its bytes live: its
    artifacts stay where the job that first published it put them, and nothing is uploaded to this job's location.
    Registered with other bytes, it conflicts as publish() does.
    """
    if register:
        location = _validated_location(bundle)
        region = _publish_region(s3_client, greengrass_client, register, region)
        registered = greengrass.find_registered_version(
            greengrass_client, bundle.component_name, bundle.component_version, account_id
        )
        if registered is not None and registered.state != "FAILED" and registered.artifact_digests is None:
            # Its recipe cannot be read (no greengrass:GetComponent). A shared component's version always ships the
            # same bytes (tests/packager/edge/test_agent_version.py pins them), so the version is reused as it is.
            log.info(
                "reuse %s %s: registered as %s; its digests could not be read",
                bundle.component_name,
                bundle.component_version,
                registered.arn,
            )
            return registered.arn
        if registered is not None and registered.state != "FAILED" and _same_artifacts(bundle, registered):
            log.info(
                "reuse %s %s: registered as %s with the same digests",
                bundle.component_name,
                bundle.component_version,
                registered.arn,
            )
            return registered.arn
        _check_registered_matches(bundle, registered)
        s3.check_bucket(s3_client, location.bucket, region)
        return _publish_checked(
            bundle,
            s3_client,
            greengrass_client,
            location,
            registered,
            tags=tags,
            register=register,
            transfer=transfer or TransferSettings(),
            progress=progress,
        ).component_version_arn
    return publish(
        bundle, s3_client, None, tags=tags, register=False, region=region, transfer=transfer, progress=progress
    ).component_version_arn


def _publish_checked(
    bundle: ComponentBundle,
    s3_client,
    greengrass_client,
    location: S3Location,
    registered: greengrass.RegisteredVersion | None,
    *,
    tags: Mapping[str, str] | None,
    register: bool,
    transfer: TransferSettings,
    progress: bool,
) -> PublishedComponent:
    """publish() once the bucket and the registered version (None: not registered) have been checked: what S3 holds,
    then the artifacts, then the recipe that names them, then the registration."""
    recipe = _recipe_object(bundle, location)
    recipe_remote, artifact_remotes = _check_remote(bundle, s3_client, location, recipe, registered, register)
    artifacts = tuple(
        _upload_artifact(s3_client, location, bundle, artifact, remote, transfer, progress)
        for artifact, remote in zip(bundle.artifacts, artifact_remotes)
    )
    recipe_object = _upload_recipe(s3_client, location, recipe, recipe_remote)
    arn, created = None, False
    if register:
        arn, created = (
            (registered.arn, False)
            if registered is not None
            else (greengrass.create_component_version(greengrass_client, bundle.recipe_text, tags), True)
        )
    return PublishedComponent(
        bucket=location.bucket,
        component_name=bundle.component_name,
        component_version=bundle.component_version,
        artifacts=artifacts,
        recipe=recipe_object,
        component_version_arn=arn,
        newly_registered=created,
    )


@dataclass(frozen=True)
class _RecipeObject:
    """The recipe as the S3 object publish() writes beside the artifacts."""

    data: bytes
    key: str
    digest: str


def _recipe_object(bundle: ComponentBundle, location: S3Location) -> _RecipeObject:
    data = bundle.recipe_text.encode("utf-8")
    return _RecipeObject(
        data,
        location.key_for(bundle.component_name, bundle.component_version, RECIPE_FILE_NAME),
        s3.sha256_b64_of(data),
    )


def _check_remote(
    bundle: ComponentBundle,
    s3_client,
    location: S3Location,
    recipe: _RecipeObject,
    registered: greengrass.RegisteredVersion | None,
    register: bool,
) -> tuple[RemoteObject, list[RemoteObject]]:
    """What S3 already holds at each key; a published version whose bytes differ there is a conflict, before any write."""
    recipe_remote = _inspect(
        s3_client, location.bucket, recipe.key, recipe.data, recipe.digest, len(recipe.data), "check recipe"
    )
    published = registered is not None if register else recipe_remote.state in (RemoteState.SAME, RemoteState.DIFFERENT)
    if recipe_remote.state is RemoteState.DIFFERENT and published:
        raise ConflictException(
            f"check recipe: s3://{location.bucket}/{recipe.key} already holds a different recipe for "
            f"{bundle.component_name} {bundle.component_version}; "
            "component versions are immutable, publish a new version",
            recipe.key,
            "S3Object",
        )
    artifact_remotes = []
    for artifact in bundle.artifacts:
        key = _artifact_key(location, bundle, artifact)
        remote = _inspect(
            s3_client,
            location.bucket,
            key,
            artifact.path,
            artifact.sha256_b64,
            artifact.size,
            f"check artifact {artifact.name}",
        )
        if remote.state is RemoteState.DIFFERENT and published:
            raise ConflictException(
                f"check artifact {artifact.name}: s3://{location.bucket}/{key} holds different bytes for the already "
                f"published {bundle.component_name} {bundle.component_version}; Greengrass digests are immutable, "
                "publish a new version",
                key,
                "S3Object",
            )
        artifact_remotes.append(remote)
    return recipe_remote, artifact_remotes


def _upload_artifact(
    s3_client,
    location: S3Location,
    bundle: ComponentBundle,
    artifact: BundleArtifact,
    remote: RemoteObject,
    transfer: TransferSettings,
    progress: bool,
) -> PublishedObject:
    """One artifact, verified right after its upload; skipped when S3 already holds the same bytes."""
    key = _artifact_key(location, bundle, artifact)
    if remote.state is RemoteState.SAME:
        log.info("skip s3://%s/%s: same bytes already there", location.bucket, key)
        return PublishedObject(key, artifact.size, artifact.sha256_b64, remote.checksum or artifact.sha256_b64, False)
    uploaded = s3.upload_file(
        s3_client,
        location.bucket,
        key,
        artifact.path,
        artifact.size,
        transfer,
        progress=progress,
        step=f"upload artifact {artifact.name}",
    )
    checksum = s3.verify_object(
        s3_client,
        location.bucket,
        key,
        artifact.path,
        artifact.sha256_b64,
        artifact.size,
        step=f"verify artifact {artifact.name}",
        uploaded=uploaded,
    )
    return PublishedObject(key, artifact.size, artifact.sha256_b64, checksum, True)


def _upload_recipe(s3_client, location: S3Location, recipe: _RecipeObject, remote: RemoteObject) -> PublishedObject:
    """The recipe, written only once every artifact it names is in place."""
    if remote.state is RemoteState.SAME:
        return PublishedObject(recipe.key, len(recipe.data), recipe.digest, remote.checksum or recipe.digest, False)
    uploaded = s3.put_bytes(
        s3_client, location.bucket, recipe.key, recipe.data, RECIPE_CONTENT_TYPE, step="upload recipe"
    )
    checksum = s3.verify_object(
        s3_client,
        location.bucket,
        recipe.key,
        recipe.data,
        recipe.digest,
        len(recipe.data),
        step="verify recipe",
        uploaded=uploaded,
    )
    return PublishedObject(recipe.key, len(recipe.data), recipe.digest, checksum, True)


def _validated_location(bundle: ComponentBundle) -> S3Location:
    """The bundle must point its recipe at exactly the keys publish() writes, with the bundle's own digests."""
    location = bundle.s3_location
    if location is None:
        raise ValidationException("the bundle has no S3 location to publish to", field="s3_location")
    names = [a.name for a in bundle.artifacts]
    if len(set(names)) != len(names):
        raise ValidationException("two bundle artifacts share a file name", field="artifacts")
    if RECIPE_FILE_NAME in names:
        raise ValidationException(
            f"an artifact may not be named {RECIPE_FILE_NAME}: that key holds the recipe", field="artifacts"
        )
    expected: dict[str, str] = {}
    for artifact in bundle.artifacts:
        uri = location.uri_for(bundle.component_name, bundle.component_version, artifact.name)
        if artifact.uri != uri:
            raise ValidationException(
                f"artifact {artifact.name} points at {artifact.uri}, expected {uri}", field="artifacts.uri"
            )
        if not artifact.path.is_file():
            raise ValidationException(f"artifact file {artifact.path} does not exist", field="artifacts.path")
        if artifact.path.stat().st_size != artifact.size:
            raise ValidationException(
                f"artifact file {artifact.path} is {artifact.path.stat().st_size} bytes, "
                f"the bundle says {artifact.size}",
                field="artifacts.size",
            )
        expected[uri] = artifact.sha256_b64
    for uri, digest in greengrass.recipe_artifact_digests(bundle.recipe_text).items():
        if _is_s3(uri) and uri not in expected:
            raise ValidationException(f"the recipe names {uri}, which is not a bundle artifact", field="recipe")
        if uri in expected and digest is not None and digest != expected[uri]:
            raise ValidationException(f"the recipe's Digest for {uri} is not the bundle's SHA-256", field="recipe")
    return location


def _publish_region(s3_client, greengrass_client, register: bool, region: str | None) -> str:
    if register:
        if greengrass_client is None:
            raise ValidationException(
                "registration needs a Greengrass v2 client; pass register=False to upload only", field="register"
            )
        client_region = greengrass_client.meta.region_name
        if region is not None and region != client_region:
            raise ValidationException(
                f"region {region} differs from the Greengrass client's region {client_region}", field="region"
            )
        return client_region
    return region or s3_client.meta.region_name


def _check_registered_matches(bundle: ComponentBundle, registered: greengrass.RegisteredVersion | None) -> None:
    if registered is None:
        return
    name, version = bundle.component_name, bundle.component_version
    if registered.state == "FAILED":
        raise ConflictException(
            f"{greengrass.CHECK_STEP}: {name} {version} is registered in state FAILED "
            f"({registered.status_message or 'no message'}); delete it or publish a new version",
            registered.arn,
            "ComponentVersion",
        )
    if registered.artifact_digests is None:
        raise ConflictException(
            f"{greengrass.CHECK_STEP}: {name} {version} is already registered, and its digests cannot be compared "
            "without greengrass:GetComponent; component versions are immutable, publish a new version",
            registered.arn,
            "ComponentVersion",
        )
    bundle_digests = {a.uri: a.sha256_b64 for a in bundle.artifacts}
    ours = {uri: bundle_digests[uri] for uri in greengrass.recipe_artifact_digests(bundle.recipe_text) if _is_s3(uri)}
    theirs = {uri: digest for uri, digest in registered.artifact_digests.items() if _is_s3(uri)}
    if theirs != ours:
        raise ConflictException(
            f"{greengrass.CHECK_STEP}: {name} {version} is already registered with different artifacts or digests; "
            "component versions are immutable, publish a new version",
            registered.arn,
            "ComponentVersion",
        )


def _same_artifacts(bundle: ComponentBundle, registered: greengrass.RegisteredVersion) -> bool:
    """The same file names with the same digests, whatever bucket and prefix the registered recipe points at."""
    ours = {a.name: a.sha256_b64 for a in bundle.artifacts}
    theirs = {uri.rsplit("/", 1)[-1]: digest for uri, digest in registered.artifact_digests.items() if _is_s3(uri)}
    return len(theirs) == len(registered.artifact_digests) and theirs == ours


def _is_s3(uri: str) -> bool:
    return uri.lower().startswith("s3://")


def _artifact_key(location: S3Location, bundle: ComponentBundle, artifact: BundleArtifact) -> str:
    return location.key_for(bundle.component_name, bundle.component_version, artifact.name)


def _inspect(
    s3_client, bucket: str, key: str, source: s3.Source, sha256_b64: str, size: int, step: str
) -> RemoteObject:
    try:
        return s3.inspect_object(s3_client, bucket, key, source, sha256_b64, size)
    except Exception as exc:
        raise aws_error(step, exc, resource_id=key, resource_type="S3Object") from None
