from lcdiff.cli import main


def test_help_exits_zero(capsys):
    assert main(["--help"]) == 0
    assert "lcdiff" in capsys.readouterr().out.lower()


def test_unknown_command_is_nonzero():
    assert main(["no-such-command"]) != 0
