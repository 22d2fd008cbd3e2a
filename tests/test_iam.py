"""`dagmirror iam-policy`: each role's policy, evaluated request by request (dagmirror/setup/iameval.py),
including the prefix edge cases (`dags/production/` must not reach `dags/production-old/`), and the
evaluator itself on the policy language it claims to cover."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from dagmirror.errors import ConfigError
from dagmirror.manifest import PROBE_KEY, body_key, manifest_key, pointer_key
from dagmirror.setup import iam
from dagmirror.setup.iameval import Request, UnsupportedPolicy, allows, evaluate

from .helpers import dagmirror

B = "acme-airflow"
SHA = "ab" * 32


def obj(key: str) -> str:
    return f"arn:aws:s3:::{B}/{key}"


BUCKET = f"arn:aws:s3:::{B}"


def policy_for(role: str, *envs: str, **kw: Any) -> dict[str, Any]:
    return iam.policy(iam.PolicyRequest.create(role, B, envs, **kw))


def can(policy: dict[str, Any], action: str, resource: str, **context: str) -> bool:
    return allows([policy], Request(action, resource, context))


def can_list(policy: dict[str, Any], prefix: str, action: str = "s3:ListBucket") -> bool:
    return can(policy, action, BUCKET, **{"s3:prefix": prefix})


# -- mirror ------------------------------------------------------------------------------------------------
def test_mirror_lists_only_its_environment_with_exact_prefixes() -> None:
    p = policy_for("mirror", "production")
    assert can_list(p, "dags/production/")
    assert can_list(p, "dags/production/team-a/")
    for other in ("dags/production-old/", "dags/production", "dags/", "", "dags/staging/", "metadata/"):
        assert not can_list(p, other), other


def test_mirror_reads_its_files_and_release_objects_but_not_another_environment() -> None:
    p = policy_for("mirror", "production")
    for key in ("dags/production/a.py", pointer_key("dags/production/"), body_key(SHA), manifest_key(SHA)):
        assert can(p, "s3:GetObject", obj(key)), key
    assert can(p, "s3:GetObject", obj(f"metadata/releases/archives/{SHA}.tar.zst"))
    for key in (
        "dags/production-old/a.py",
        "dags/staging/a.py",
        pointer_key("dags/production-old/"),
        "metadata/deploys/production/x.json",
        "metadata/fleet/dags/production/pod-b.json",
    ):
        assert not can(p, "s3:GetObject", obj(key)), key


def test_mirror_writes_only_its_status_and_audit_objects() -> None:
    p = policy_for("mirror", "production")
    assert can(p, "s3:PutObject", obj("metadata/fleet/dags/production/pod-a.json"))
    assert can(p, "s3:PutObject", obj("metadata/sync-logs/pod-a/2026-11-30.jsonl"))
    for key in (
        "dags/production/a.py",
        pointer_key("dags/production/"),
        body_key(SHA),
        PROBE_KEY,
        "metadata/fleet/dags/production-old/pod-a.json",
        "metadata/deploys/production/x.json",
    ):
        assert not can(p, "s3:PutObject", obj(key)), key
    for key in ("dags/production/a.py", "metadata/sync-logs/pod-a/2026-11-30.jsonl", body_key(SHA)):
        assert not can(p, "s3:DeleteObject", obj(key)), key


def test_a_mirror_of_two_environments_reaches_both_and_nothing_between() -> None:
    p = policy_for("mirror", "dev", "staging")
    assert can_list(p, "dags/dev/")
    assert can_list(p, "dags/staging/x/")
    assert not can_list(p, "dags/development/")
    assert can(p, "s3:GetObject", obj(pointer_key("dags/staging/")))
    assert not can(p, "s3:GetObject", obj(pointer_key("dags/production/")))


# -- deployer ----------------------------------------------------------------------------------------------
def test_deployer_writes_only_its_environments_files_pointer_and_records() -> None:
    p = policy_for("deployer", "production")
    for key in (
        "dags/production/a.py",
        pointer_key("dags/production/"),
        "metadata/deploys/production/r.json",
        body_key(SHA),
        manifest_key(SHA),
        PROBE_KEY,
    ):
        assert can(p, "s3:PutObject", obj(key)), key
    for key in (
        "dags/production-old/a.py",
        "dags/staging/a.py",
        pointer_key("dags/production-old/"),
        pointer_key("dags/staging/"),
        "metadata/deploys/production-old/r.json",
        "metadata/deploys/staging/r.json",
        "metadata/fleet/dags/production/pod-a.json",
    ):
        assert not can(p, "s3:PutObject", obj(key)), key


def test_deployer_deletes_only_its_environments_files_and_never_a_version() -> None:
    p = policy_for("deployer", "production")
    assert can(p, "s3:DeleteObject", obj("dags/production/a.py"))
    for key in (
        "dags/production-old/a.py",
        body_key(SHA),
        pointer_key("dags/production/"),
        "metadata/deploys/production/r.json",
    ):
        assert not can(p, "s3:DeleteObject", obj(key)), key
    assert not can(p, "s3:DeleteObjectVersion", obj("dags/production/a.py"))


def test_deployer_reads_versions_records_and_fleet_of_its_environment() -> None:
    p = policy_for("deployer", "production")
    assert can_list(p, "dags/production/", "s3:ListBucketVersions")
    assert not can_list(p, "dags/production-old/", "s3:ListBucketVersions")
    assert can_list(p, "metadata/deploys/production/")  # ListBucket is whole-bucket for the deployer
    assert can(p, "s3:GetObjectVersion", obj("dags/production/a.py"))
    assert can(p, "s3:GetObject", obj("metadata/fleet/dags/production/pod-a.json"))
    assert not can(p, "s3:GetObject", obj("metadata/fleet/dags/production-old/pod-a.json"))
    assert not can(p, "s3:GetObject", obj("metadata/deploys/staging/r.json"))


def test_read_env_lets_a_deployer_promote_from_an_environment_it_cannot_write() -> None:
    p = policy_for("deployer", "production", read_envs=["staging"])
    assert can(p, "s3:GetObjectVersion", obj("dags/staging/a.py"))
    assert can_list(p, "dags/staging/", "s3:ListBucketVersions")
    assert not can(p, "s3:PutObject", obj("dags/staging/a.py"))
    assert not can(p, "s3:PutObject", obj(pointer_key("dags/staging/")))
    assert not can(p, "s3:DeleteObject", obj("dags/staging/a.py"))


# -- admin, and what only admin may do ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "action",
    [
        "s3:CreateBucket",
        "s3:PutBucketPolicy",
        "s3:PutLifecycleConfiguration",
        "s3:PutBucketVersioning",
        "s3:PutBucketPublicAccessBlock",
        "s3:PutBucketNotification",
    ],
)
def test_only_admin_changes_the_bucket(action: str) -> None:
    assert can(policy_for("admin"), action, BUCKET)
    assert not can(policy_for("mirror", "production"), action, BUCKET)
    assert not can(policy_for("deployer", "production"), action, BUCKET)


def test_only_admin_collects_release_objects() -> None:
    admin = policy_for("admin")
    for key in (body_key(SHA), manifest_key(SHA), pointer_key("dags/production/")):
        assert can(admin, "s3:DeleteObject", obj(key)), key
    assert can_list(admin, "metadata/releases/")
    assert not can(admin, "s3:DeleteObject", obj("dags/production/a.py"))  # deploys delete DAGs, not gc
    assert not can(admin, "s3:PutObject", obj("dags/production/a.py"))


# -- VPC endpoint ------------------------------------------------------------------------------------------
def test_vpce_condition_allows_only_requests_through_that_endpoint() -> None:
    p = policy_for("mirror", "production", vpce="vpce-0a1b2c")
    key = obj("dags/production/a.py")
    assert can(p, "s3:GetObject", key, **{"aws:SourceVpce": "vpce-0a1b2c"})
    assert not can(p, "s3:GetObject", key, **{"aws:SourceVpce": "vpce-999"})
    assert not can(p, "s3:GetObject", key)  # not through an endpoint at all
    listing = {"s3:prefix": "dags/production/", "aws:SourceVpce": "vpce-0a1b2c"}
    assert allows([p], Request("s3:ListBucket", BUCKET, listing))
    assert all(s["Condition"]["StringEquals"]["aws:SourceVpce"] == "vpce-0a1b2c" for s in p["Statement"])


# -- bad input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"role": "mirror", "envs": ["prod*"]}, "invalid environment name 'prod*'"),
        ({"role": "mirror", "envs": ["a/b"]}, "invalid environment name 'a/b'"),
        ({"role": "mirror", "envs": ["${aws:username}"]}, "invalid environment name"),
        ({"role": "mirror", "envs": []}, "a mirror needs at least one --env"),
        ({"role": "admin", "envs": ["dev"]}, "give no --env"),
        ({"role": "mirror", "envs": ["dev"], "vpce": "nope"}, "invalid VPC endpoint id"),
        ({"role": "mirror", "envs": ["dev"], "read_envs": ["prod"]}, "deployer role only"),
        ({"role": "root", "envs": ["dev"]}, "unknown role 'root'"),
    ],
)
def test_bad_requests_are_refused_with_the_reason(kwargs: dict[str, Any], message: str) -> None:
    role = kwargs.pop("role")
    envs = kwargs.pop("envs")
    with pytest.raises(
        ConfigError, match=message.replace("$", r"\$").replace("{", r"\{").replace("*", r"\*")
    ):
        iam.PolicyRequest.create(role, B, envs, **kwargs)


def test_cli_prints_the_policy_as_json(moto_endpoint: str) -> None:
    run = dagmirror(
        "iam-policy", "--role", "deployer", "--bucket", B, "--env", "production", endpoint=moto_endpoint
    )
    assert run.code == 0, run.stderr
    doc = orjson.loads(run.stdout)
    assert doc == policy_for("deployer", "production")
    assert can(doc, "s3:PutObject", obj("dags/production/a.py"))


def test_cli_refuses_a_wildcard_environment_with_one_line_and_exit_2(moto_endpoint: str) -> None:
    run = dagmirror("iam-policy", "--role", "mirror", "--bucket", B, "--env", "prod*", endpoint=moto_endpoint)
    assert run.code == 2
    assert run.stderr.strip().splitlines() == [
        "dagmirror: error: invalid environment name 'prod*' (letters, digits, . _ -)"
    ]
    assert run.stdout == ""


# -- the evaluator -----------------------------------------------------------------------------------------
def stmt(effect: str = "Allow", **fields: Any) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{"Effect": effect, **fields}]}


def test_explicit_deny_wins_over_any_allow() -> None:
    allow = stmt(Action="s3:*", Resource="*")
    deny = stmt("Deny", Action="s3:DeleteObject", Resource=obj("*"))
    assert evaluate([allow, deny], Request("s3:DeleteObject", obj("k"))) == "deny"
    assert evaluate([allow, deny], Request("s3:GetObject", obj("k"))) == "allow"
    assert evaluate([deny], Request("s3:GetObject", obj("k"))) == "implicit-deny"


def test_actions_match_case_insensitively_and_resources_case_sensitively() -> None:
    p = stmt(Action="S3:getobject", Resource=obj("Dags/*"))
    assert allows([p], Request("s3:GetObject", obj("Dags/a")))
    assert not allows([p], Request("s3:GetObject", obj("dags/a")))


def test_question_mark_matches_one_character_and_brackets_are_literal() -> None:
    p = stmt(Action="s3:GetObject", Resource=[obj("a?c"), obj("[x]")])
    assert allows([p], Request("s3:GetObject", obj("abc")))
    assert not allows([p], Request("s3:GetObject", obj("abbc")))
    assert allows([p], Request("s3:GetObject", obj("[x]")))
    assert not allows([p], Request("s3:GetObject", obj("x")))


def test_not_action_and_not_resource() -> None:
    p = stmt("Deny", NotAction="s3:GetObject", NotResource=obj("public/*"))
    assert evaluate([p], Request("s3:PutObject", obj("private/k"))) == "deny"
    assert evaluate([p], Request("s3:GetObject", obj("private/k"))) == "implicit-deny"
    assert evaluate([p], Request("s3:PutObject", obj("public/k"))) == "implicit-deny"


def test_missing_condition_keys_follow_aws_rules() -> None:
    def holds(operator: str, context: dict[str, str]) -> bool:
        p = stmt(Action="s3:GetObject", Resource="*", Condition={operator: {"aws:SourceVpce": "vpce-1"}})
        return allows([p], Request("s3:GetObject", obj("k"), context))

    assert not holds("StringEquals", {})
    assert holds("StringNotEquals", {})
    assert holds("StringEqualsIfExists", {})
    assert not holds("StringEqualsIfExists", {"aws:SourceVpce": "vpce-2"})
    assert holds("StringEquals", {"AWS:SOURCEVPCE": "vpce-1"})  # keys are case-insensitive
    assert not holds("StringNotLike", {"aws:SourceVpce": "vpce-1"})


def test_bool_conditions_and_principals_of_resource_policies() -> None:
    tls_only = stmt(
        "Deny",
        Principal="*",
        Action="s3:*",
        Resource=obj("*"),
        Condition={"Bool": {"aws:SecureTransport": False}},
    )
    allow = stmt(Action="s3:GetObject", Resource=obj("*"))
    assert (
        evaluate([allow, tls_only], Request("s3:GetObject", obj("k"), {"aws:SecureTransport": "false"}))
        == "deny"
    )
    assert (
        evaluate([allow, tls_only], Request("s3:GetObject", obj("k"), {"aws:SecureTransport": "true"}))
        == "allow"
    )
    named = stmt(Principal={"AWS": ["arn:aws:iam::1:role/x"]}, Action="s3:GetObject", Resource="*")
    assert allows([named], Request("s3:GetObject", obj("k"), principal="arn:aws:iam::1:role/x"))
    assert not allows([named], Request("s3:GetObject", obj("k"), principal="arn:aws:iam::1:role/y"))


@pytest.mark.parametrize(
    "policy",
    [
        stmt(Action="s3:GetObject", Resource="*", Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}),
        stmt(Action="s3:GetObject", Resource=obj("${aws:username}/*")),
        stmt(Action="s3:GetObject", Resource="*", NotResource="x"),
        stmt(Action="s3:GetObject"),
        stmt("Maybe", Action="s3:GetObject", Resource="*"),
        stmt(NotPrincipal={"AWS": "x"}, Action="s3:GetObject", Resource="*"),
    ],
)
def test_what_the_evaluator_does_not_implement_is_refused_not_guessed(policy: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedPolicy):
        evaluate([policy], Request("s3:GetObject", obj("k")))
