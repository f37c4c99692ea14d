"""register_commands: a plugin's subcommand is mounted on `taskhub`, runs, and cannot shadow a built-in one."""

from __future__ import annotations

import argparse

import pytest

import taskhub
from taskhub import hookimpl
from taskhub.cli import main


class GreetPlugin:
    @hookimpl
    def register_commands(self, register):
        register("greet", self.configure, self.run, "say hello")
        register("tasks", self.configure, self.run)  # a built-in name: skipped with a warning

    @staticmethod
    def configure(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--shout", action="store_true")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        if args.name == "nobody":
            raise taskhub.BadInputError("nobody to greet")
        text = f"hello {args.name}"
        print(text.upper() if args.shout else text)
        return 0


def test_plugin_commands_are_mounted_and_built_ins_win(capsys):
    taskhub.register_plugin(GreetPlugin(), "greeter")
    try:
        with pytest.warns(UserWarning, match="registers command 'tasks', a built-in command"):
            assert main(["greet", "ada", "--shout"]) == 0
            assert capsys.readouterr().out == "HELLO ADA\n"
            assert main(["greet", "nobody"]) == 1
            err = capsys.readouterr().err.splitlines()
            assert err[-1] == "error: nobody to greet"  # one line, after the CLI's plugin warnings
            assert all(line.startswith("warning: ") for line in err[:-1])
    finally:
        taskhub.unregister_plugin("greeter")
    with pytest.raises(SystemExit):
        main(["greet", "ada"])
