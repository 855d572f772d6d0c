"""The ``tcpfiles`` parser: each command family adds its own subcommand, flags and defaults."""

from __future__ import annotations

import contextlib
import io

from twisted.trial.unittest import SynchronousTestCase

from tcpfiles.cli import build_parser
from tcpfiles.cli.chat import run_chat
from tcpfiles.cli.common import DEFAULT_CHAT, DEFAULT_ECHO, DEFAULT_SERVER
from tcpfiles.cli.echo import run_echo
from tcpfiles.cli.files import plan_get, plan_put, run_get, run_put
from tcpfiles.cli.ls import run_ls


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


class ParserTests(SynchronousTestCase):
    def test_commands_in_order(self) -> None:
        """--help lists get, put, ls, chat, echo, in that order."""
        lines = build_parser().format_help().splitlines()
        first = lines.index("  COMMAND") + 1
        listed = [line.split()[0] for line in lines[first : first + 5]]
        self.assertEqual(listed, ["get", "put", "ls", "chat", "echo"])

    def test_unknown_command_is_a_usage_error(self) -> None:
        """An unknown command exits 2 with argparse's message on stderr."""
        err = io.StringIO()
        with contextlib.redirect_stderr(err), self.assertRaises(SystemExit) as caught:
            parse("bogus")
        self.assertEqual(caught.exception.code, 2)
        self.assertIn("invalid choice: 'bogus'", err.getvalue())

    def test_get(self) -> None:
        """get: no server default (it depends on --oneshot), retries, a planner, its hint."""
        args = parse("get", "a", "b")
        self.assertEqual(args.remote, ["a", "b"])
        self.assertIsNone(args.server)
        self.assertEqual((args.retry_for, args.timeout), (60.0, 30.0))
        self.assertFalse(args.oneshot or args.recursive or args.quiet)
        self.assertIs(args.handler, run_get)
        self.assertIs(args.planner, plan_get)
        self.assertEqual(args.interrupted, "interrupted; run the same command again to resume")

    def test_put(self) -> None:
        """put: the files server by default, REMOTE optional, its own interruption hint."""
        args = parse("put", "-r", "--overwrite", "here", "there/")
        self.assertEqual((args.local, args.remote), ("here", "there/"))
        self.assertEqual(args.server, DEFAULT_SERVER)
        self.assertTrue(args.recursive and args.overwrite)
        self.assertIs(args.handler, run_put)
        self.assertIs(args.planner, plan_put)
        self.assertEqual(
            args.interrupted,
            "interrupted; nothing partial is kept on the server: run the same command again",
        )

    def test_ls(self) -> None:
        """ls: the root by default, retries, nothing to plan."""
        args = parse("ls")
        self.assertEqual((args.path, args.server), ("", DEFAULT_SERVER))
        self.assertEqual((args.retry_for, args.timeout), (60.0, 30.0))
        self.assertIs(args.handler, run_ls)
        self.assertFalse(hasattr(args, "planner"))

    def test_chat_and_echo(self) -> None:
        """chat and echo: their own default servers, the shared TLS and login options."""
        chat = parse("chat", "-n", "ann", "-u", "bob", "--insecure")
        self.assertEqual((chat.server, chat.nick, chat.user), (DEFAULT_CHAT, "ann", "bob"))
        self.assertTrue(chat.insecure)
        self.assertIs(chat.handler, run_chat)
        echo = parse("echo", "--ca", "ca.pem")
        self.assertEqual((echo.server, echo.ca), (DEFAULT_ECHO, "ca.pem"))
        self.assertIs(echo.handler, run_echo)
        self.assertFalse(hasattr(echo, "retry_for"))

    def test_server_help_names_each_default(self) -> None:
        """Each command's --server help names its own default server."""
        parser = build_parser()
        for command, default in [("get", DEFAULT_SERVER), ("chat", DEFAULT_CHAT)]:
            out = io.StringIO()
            with contextlib.redirect_stdout(out), self.assertRaises(SystemExit):
                parser.parse_args([command, "--help"])
            self.assertIn(f"(default {default})", " ".join(out.getvalue().split()))
