"""SMART Backend Services without servers: the CLI's exit code 4 and --smart-kid, and the test gateway's scopes."""

from __future__ import annotations

from pathlib import Path

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from smartgateway import scope_allows
from typer.testing import CliRunner

from fhir_lupus.cli import app

runner = CliRunner()
TOKEN_URL = "https://auth.test/token"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "client.pem"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def pull_args(tmp_path: Path, key_file: Path, *extra: str) -> list[str]:
    return [
        "pull", "--study", "NCT00698191", "-o", str(tmp_path / "labs.csv"), "--journal", str(tmp_path / "j.sqlite"),
        "--server", "https://fhir.test/r4", "--smart-client-id", "lupus", "--smart-key", str(key_file),
        "--smart-token-url", TOKEN_URL, *extra,
    ]  # fmt: skip


@respx.mock
def test_refused_client_exits_4_with_one_line_naming_url_client_and_error(tmp_path: Path, key_file: Path) -> None:
    respx.post(TOKEN_URL).mock(
        return_value=httpx.Response(
            401, json={"error": "invalid_client", "error_description": "client authentication failed"}
        )
    )
    result = runner.invoke(app, pull_args(tmp_path, key_file))
    assert result.exit_code == 4, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("error:"))
    assert TOKEN_URL in line and "'lupus'" in line and "invalid_client (client authentication failed)" in line
    assert "--smart-key" in line and "JWKS" in line and "PRIVATE KEY" not in result.output


@respx.mock
def test_smart_kid_is_sent_in_the_assertion_header(tmp_path: Path, key_file: Path) -> None:
    token = respx.post(TOKEN_URL).mock(return_value=httpx.Response(401, json={"error": "invalid_client"}))
    runner.invoke(app, pull_args(tmp_path, key_file, "--smart-kid", "key-2026"))
    form = dict(httpx.QueryParams(token.calls[0].request.content.decode()))
    assert jwt.get_unverified_header(form["client_assertion"])["kid"] == "key-2026"


@pytest.mark.parametrize(
    ("scopes", "resource_type", "interaction", "allowed"),
    [
        ("system/*.rs system/*.cud", "Patient", "s", True),
        ("system/*.rs system/*.cud", "*", "c", True),
        ("system/*.rs", "Patient", "c", False),
        ("system/*.read", "Observation", "r", True),
        ("system/*.read", "Observation", "u", False),
        ("system/*.write", "Observation", "d", True),
        ("system/Patient.rs", "Observation", "s", False),
        ("system/Patient.rs", "Patient", "r", True),
        ("user/*.cruds patient/*.*", "Patient", "r", False),  # only system scopes count for a backend service
    ],
)
def test_gateway_scope_rules(scopes: str, resource_type: str, interaction: str, allowed: bool) -> None:
    assert scope_allows(scopes, resource_type, interaction) is allowed
