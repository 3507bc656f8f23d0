"""Configuration: validated at start, errors name the key, secrets resolved by precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from pimingestd import config
from pimingestd.cli import EXIT_CONFIG, main
from pimingestd.errors import ConfigError

from .helpers import REPO

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
