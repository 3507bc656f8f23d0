"""Configuration: validated at start, errors name the key, secrets resolved by precedence."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from pimingestd import config
from pimingestd.cli import EXIT_CONFIG, main
from pimingestd.errors import ConfigError

from .helpers import REPO, daemon_process, free_port, write_config

MINIMAL = """
[chunking]
records = 5
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_example_config_is_valid() -> None:
    """config.example.toml loads as it is, with the bundled receiver on."""
    cfg = config.load(REPO / "config.example.toml", env={})
    assert cfg.receiver is not None and cfg.chunking.records == 1000
    assert cfg.daemon.state_db == REPO / "var" / "ingestion_state.db"
    assert REPO / "examples" in cfg.http.allowed_roots


def test_relative_paths_resolve_against_config_folder(tmp_path: Path) -> None:
    """Relative paths are taken from the config file's folder, not the working directory."""
    cfg = config.load(
        write(tmp_path, MINIMAL + '[daemon]\nstate_db = "s/x.db"\n[http]\nallowed_roots = ["in"]\n'), env={}
    )
    assert cfg.daemon.state_db == tmp_path.resolve() / "s" / "x.db"
    assert cfg.http.allowed_roots == (tmp_path.resolve() / "in",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[chunking]\nrecords = 5\nbytes = 100\n", "exactly one of `records` or `bytes`"),
        ("[chunking]\n", "exactly one of `records` or `bytes`"),
        (MINIMAL + "[daemon]\nmax_concurent = 3\n", "unknown key(s): daemon.max_concurent"),
        (MINIMAL + "[deamon]\n", r"unknown section(s): [deamon]"),
        (MINIMAL + "[delivery]\nack_timeout = 0\n", "delivery.ack_timeout must be > 0"),
        (MINIMAL + '[delivery]\nmax_attempts = "3"\n', "delivery.max_attempts must be an integer"),
        (MINIMAL + "[delivery]\npreflight = 1\n", "delivery.preflight must be true or false"),
        (MINIMAL + "[http]\nport = 70000\n", "http.port must be between 0 and 65535"),
        (MINIMAL + '[pimcore]\nchunk_url = "ftp://x"\n', "pimcore.chunk_url must be an http(s) URL"),
        (MINIMAL + '[logging]\nformat = "xml"\n', "logging.format must be one of json, console"),
        ("[chunking\n", "invalid TOML"),
        (MINIMAL + '[remote]\nallowed_urls = ["ftp://x/"]\n', "remote.allowed_urls[0] = 'ftp://x/': must start with"),
        (MINIMAL + '[remote]\nallowed_urls = ["https://u:p@x/"]\n', "without credentials"),
        (MINIMAL + "[remote.s3]\nbucket = 1\n", "unknown key(s): remote.s3.bucket"),
        (MINIMAL + '[remote.s3]\nendpoint_url = "localhost:9000"\n', "remote.s3.endpoint_url must be an http(s) URL"),
        (MINIMAL + "[remote.http]\nheaders = { X = 1 }\n", "remote.http.headers must be a table of header name"),
        (
            MINIMAL + '[[remote.watch]]\nurl = "s3://b/in/"\n',
            "remote.watch[0].url: s3://b/in/: [remote] allowed_urls is empty",
        ),
        (
            MINIMAL + '[remote]\nallowed_urls = ["https://x/"]\n[[remote.watch]]\nurl = "https://x/in/"\n',
            "a remote inbox is an s3:// prefix or an sftp:// folder",
        ),
        (
            MINIMAL + '[remote]\nallowed_urls = ["s3://b/"]\n[[remote.watch]]\nurl = "s3://b/in/"\nsheet = 3\n',
            "remote.watch[0].sheet must be a non-empty string",
        ),
        (
            MINIMAL + '[remote]\nallowed_urls = ["s3://b/"]\n[[remote.watch]]\nurl = "s3://b/in/"\nfoo = 1\n',
            "unknown key(s): remote.watch[0].foo",
        ),
        (
            MINIMAL + '[remote]\nallowed_urls = ["https://x/feeds/../admin/"]\n',
            "remote.allowed_urls[0] = 'https://x/feeds/../admin/': a path with a '.' or '..' segment",
        ),
        (
            MINIMAL + '[remote]\nallowed_urls = ["sftp://h/in/"]\n[[remote.watch]]\nurl = "sftp://h/in/"\n'
            'done_prefix = "sftp://other/done/"\n',
            "remote.watch[0].done_prefix = 'sftp://other/done/': must be on the inbox's server (sftp://h)",
        ),
        (
            MINIMAL + '[remote]\nallowed_urls = ["s3://b/in/"]\n[[remote.watch]]\nurl = "s3://b/in/"\n'
            'failed_prefix = "s3://b/in/%2e%2e/private/"\n',
            "remote.watch[0].failed_prefix = 's3://b/in/%2e%2e/private/': a path with a '.' or '..' segment",
        ),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    """Each invalid config raises ConfigError naming the offending key."""
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, text), env={})
    assert message in str(info.value)


def test_secret_precedence(tmp_path: Path) -> None:
    """Credential beats environment beats file."""
    p = write(tmp_path, MINIMAL + '[pimcore]\nsecret = "from-file"\n')
    assert config.load(p, env={}).pimcore.secret == "from-file"
    assert config.load(p, env={config.SECRET_ENV: "from-env"}).pimcore.secret == "from-env"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "pimcore-secret").write_text("from-credential\n")
    env = {config.SECRET_ENV: "from-env", "CREDENTIALS_DIRECTORY": str(creds)}
    assert config.load(p, env=env).pimcore.secret == "from-credential"


def test_api_token_precedence(tmp_path: Path) -> None:
    """The API token, as the PIM-Core secret: the credential api-token (a Docker secret under
    CREDENTIALS_DIRECTORY=/run/secrets in the image) beats PIMINGESTD_API_TOKEN beats the file; and it counts
    as set for a daemon listening beyond loopback."""
    p = write(tmp_path, MINIMAL + '[http]\napi_token = "from-file"\n')
    assert config.load(p, env={}).http.api_token == "from-file"
    assert config.load(p, env={"PIMINGESTD_API_TOKEN": "from-env"}).http.api_token == "from-env"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "api-token").write_text("from-credential\n")
    env = {"PIMINGESTD_API_TOKEN": "from-env", "CREDENTIALS_DIRECTORY": str(creds)}
    assert config.load(p, env=env).http.api_token == "from-credential"
    (creds / "pimcore-secret").write_text("k\n")
    open_host = write(tmp_path, MINIMAL + '[http]\nhost = "0.0.0.0"\n')
    assert config.load(open_host, env={"CREDENTIALS_DIRECTORY": str(creds)}).http.api_token == "from-credential"


def test_remote_secrets_precedence_and_masking(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """S3 keys: credential beats environment beats file; HTTP headers from the environment add to the file's;
    all of them masked."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "s3-secret").write_text("cred-secret\n")
    p = write(
        tmp_path,
        MINIMAL + '[remote.s3]\nkey = "file-key"\nsecret = "file-secret"\n[remote.http]\nheaders = { A = "1" }\n',
    )
    env = {"CREDENTIALS_DIRECTORY": str(creds), "PIMINGESTD_S3_KEY": "env-key", "PIMINGESTD_HTTP_HEADERS": '{"B": "2"}'}
    cfg = config.load(p, env=env)
    assert (cfg.remote.s3.key, cfg.remote.s3.secret) == ("env-key", "cred-secret")
    assert dict(cfg.remote.http.headers) == {"A": "1", "B": "2"}
    shown = json.dumps(cfg.masked())
    assert all(secret not in shown for secret in ("env-key", "cred-secret", '"1"', '"2"'))
    assert "env-key" not in repr(cfg) and "cred-secret" not in repr(cfg)


def test_masked_hides_secrets(tmp_path: Path) -> None:
    """The printable config never shows the secret or the token."""
    p = write(tmp_path, MINIMAL + '[pimcore]\nsecret = "hush-1"\n[http]\napi_token = "hush-2"\n')
    text = repr(config.load(p, env={}).masked()) + repr(config.load(p, env={}))
    assert "hush-1" not in text and "hush-2" not in text


def test_cli_config_error_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad config exits with EX_CONFIG (78) and names the key on stderr."""
    p = write(tmp_path, MINIMAL + "[daemon]\nbogus = 1\n")
    assert main(["check-config", "--config", str(p)]) == EXIT_CONFIG
    assert "daemon.bogus" in capsys.readouterr().err
    assert main(["check-config", "--config", str(REPO / "config.example.toml")]) == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[http]\nhost = "0.0.0.0"\napi_token = "t"\n', "pimcore.secret is empty"),
        ('[http]\nhost = "0.0.0.0"\n[pimcore]\nsecret = "s"\n', "http.api_token is empty"),
        ('[http]\nhost = "192.0.2.7"\n', "pimcore.secret and http.api_token are empty"),
        ('[http]\nhost = "pim.example.com"\n', "are empty"),
    ],
)
def test_listening_beyond_loopback_without_secrets_is_refused(tmp_path: Path, extra: str, message: str) -> None:
    """Empty secret or token fail open (unsigned ACKs, a readable in-flight checksum): off loopback, refused."""
    with pytest.raises(ConfigError, match=message):
        config.load(write(tmp_path, MINIMAL + extra), env={})


def test_loopback_and_explicit_insecure_are_allowed(tmp_path: Path) -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.8.9.10"):
        cfg = config.load(write(tmp_path, MINIMAL + f'[http]\nhost = "{host}"\n'), env={})
        assert cfg.http.loopback
    cfg = config.load(write(tmp_path, MINIMAL + '[http]\nhost = "0.0.0.0"\ninsecure = true\n'), env={})
    assert cfg.http.insecure and not cfg.http.loopback
    cfg = config.load(
        write(tmp_path, MINIMAL + '[http]\nhost = "0.0.0.0"\napi_token = "t"\n'), env={"PIMINGESTD_PIMCORE_SECRET": "s"}
    )
    assert not cfg.http.insecure


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[chunking]\nrecords = 100001\n", "chunking.records must be between 1 and 100000"),
        ("[chunking]\nbytes = 4611686018427387904\n", "chunking.bytes must be between 2 and 67108864"),
        (MINIMAL + '[[inbox.profiles]]\nmatch = "*"\nchunk_records = 100001\n', "inbox.profiles[0].chunk_records"),
        (MINIMAL + '[[inbox.profiles]]\nmatch = "*"\nchunk_bytes = 67108865\n', "inbox.profiles[0].chunk_bytes"),
        (MINIMAL + '[[inbox.profiles]]\nmatch = "*"\njson_path = "a..item"\n', "empty segment"),
        (MINIMAL + '[[inbox.profiles]]\nmatch = "*"\njson_path = "products"\n', "must end with 'item'"),
        (
            MINIMAL + '[[inbox.profiles]]\nmatch = "*"\nunknown_cells = "zero"\n',
            "unknown_cells must be one of fail, null",
        ),
    ],
)
def test_chunk_caps_and_format_options_are_checked_at_load(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config.load(write(tmp_path, text), env={})


async def test_the_real_daemon_refuses_an_open_listener_and_warns_when_told_insecure(tmp_path: Path) -> None:
    """Exit 78 for 0.0.0.0 without secret and token; with insecure = true it starts and warns."""
    cfg = write_config(tmp_path / "d", daemon_port=free_port(), receiver_port=free_port(), http={"host": "0.0.0.0"})
    proc = await daemon_process(cfg)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == EXIT_CONFIG, (out, err)
    assert b"http.insecure = true" in err + out
    cfg.write_text(cfg.read_text().replace('host = "0.0.0.0"', 'host = "0.0.0.0"\ninsecure = true'))
    proc = await daemon_process(cfg, merge_stderr=True)
    assert proc.stdout is not None
    line = b""
    try:
        async with asyncio.timeout(20):
            while b"insecure" not in line:
                line = await proc.stdout.readline()
                assert line, "the daemon ended without warning"
    finally:
        proc.terminate()
        await proc.wait()
    assert b'"level": "warning"' in line
