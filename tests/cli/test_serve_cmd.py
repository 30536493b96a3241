"""``prompteol serve``: flags over PROMPTEOL_* variables, fast failures before and after loading."""

from __future__ import annotations

import socket

from conftest import require

require("fastapi")

from prompteol.cli.main import build_parser, main  # noqa: E402
from prompteol.cli.serve_cmd import settings_from_args  # noqa: E402


def test_cli_flags_then_env(monkeypatch):
    monkeypatch.setenv("PROMPTEOL_TEMPLATE", "promptbert")
    monkeypatch.setenv("PROMPTEOL_MAX_INPUTS", "10")
    monkeypatch.setenv("PROMPTEOL_API_KEY", "from-env")
    args = build_parser().parse_args(
        ["serve", "--model", "tiny-random-llama", "--max-inputs", "5", "--no-normalize", "--demo", "A b.|B",
         "--served-model-name", "emb", "--max-wait-ms", "0"]
    )  # fmt: skip
    s = settings_from_args(args)
    assert (s.model, s.model_name, s.max_inputs) == ("tiny-random-llama", "emb", 5)
    assert (s.normalize, s.max_wait_ms) == (False, 0)
    assert s.encoder.template.name == "promptbert"  # no --template given: the variable counts
    assert s.api_key.get_secret_value() == "from-env"
    assert [(d.sentence, d.word) for d in s.encoder.demonstrations] == [("A b.", "B")]
    assert s.encoder.layer == -1 and s.encoder.prefix_cache is True


def test_serve_flag_is_no_packing_and_other_commands_keep_packing():
    parser = build_parser()
    assert settings_from_args(parser.parse_args(["serve", "-m", "tiny-random-llama"])).encoder.packing is True
    assert settings_from_args(parser.parse_args(["serve", "-m", "tiny-random-llama", "--no-packing"])).encoder.packing is False
    # the library default is padded: `encode` shows --packing; --no-packing, its default, is accepted too (hidden)
    assert parser.parse_args(["encode", "in.txt", "-o", "out.npy", "--no-packing"]).packing is False
    assert parser.parse_args(["encode", "in.txt", "-o", "out.npy", "--packing"]).packing is True
    assert "--no-packing" not in parser._subparsers._group_actions[0].choices["encode"].format_help()


def test_serve_command_fails_fast_on_a_bad_template(capsys):
    assert main(["serve", "--model", "tiny-random-llama", "--template", "no slot here"]) == 2
    assert "error:" in capsys.readouterr().err


def test_serve_help_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; from prompteol.cli.main import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_serve_command_fails_cleanly_on_a_taken_port(monkeypatch, test_cache_dir, capsys):
    monkeypatch.setenv("PROMPTEOL_CACHE", str(test_cache_dir))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--model", "tiny-random-llama", "--port", str(port)]) == 2
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err


def test_serve_command_fails_cleanly_on_an_unknown_model(capsys):
    assert main(["serve", "--model", "./no/such/model"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
