"""Write docs/options.md from the command-line parsers themselves, so it cannot drift.

    python docs/make_options.py            # rewrite docs/options.md
    python docs/make_options.py --check    # exit 1 if docs/options.md differs from the parsers

Per command (runtime.py, python -m data.prepare and each of its subcommands), per argument
group, one markdown table: option, default (the value the option takes when it is not given)
and help. Nothing goes through argparse's HelpFormatter, whose line width follows the
terminal, so the file is the same wherever it is made.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OPTIONS_MD = ROOT / "docs" / "options.md"
HEADER = ("# Command-line options\n\n"
          "Generated from the parsers by `python docs/make_options.py`; do not edit by hand "
          "(`tests/test_docs.py` checks that it matches). `--help` prints the same.\n")


def commands() -> list[tuple[str, argparse.ArgumentParser]]:
    """(command line, parser) for every command a user types, subcommands included."""
    sys.path.insert(0, str(ROOT))
    import runtime
    from data import prepare
    found = [("python runtime.py", runtime.build_parser())]
    prepare_parser = prepare.build_parser()
    found.append(("python -m data.prepare", prepare_parser))
    for action in subcommand_actions(prepare_parser):
        found += [(f"python -m data.prepare {name}", sub) for name, sub in action.choices.items()]
    return found


def subcommand_actions(parser: argparse.ArgumentParser) -> list[argparse._SubParsersAction]:
    return [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]


def documented_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options and positionals a table lists: all but --help and the subcommand choice."""
    return [a for a in parser._actions
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def cell(text: str) -> str:
    """One table cell: whitespace folded, and the characters a table or HTML would eat escaped."""
    text = " ".join(text.split())
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "\\<")


def code(text: str) -> str:
    return f"`{text}`".replace("|", "\\|")


def value_metavar(action: argparse.Action) -> str:
    """What follows the option on a command line, as `--help` writes it ('' for a flag)."""
    if action.nargs == 0:
        return ""
    if action.metavar is not None:
        name = action.metavar
    elif action.choices is not None:
        name = "{" + ",".join(map(str, action.choices)) + "}"
    else:
        name = action.dest.upper() if action.option_strings else action.dest
    if isinstance(action.nargs, int):
        return " ".join([name] * action.nargs)
    forms = {"?": f"[{name}]", "+": f"{name} [{name} ...]", "*": f"[{name} ...]"}
    return forms.get(action.nargs, name)


def option_text(action: argparse.Action) -> str:
    metavar = value_metavar(action)
    if not action.option_strings:
        return metavar
    return ", ".join(f"{flag} {metavar}".strip() for flag in action.option_strings)


def default_text(action: argparse.Action) -> str:
    """The value of the option's destination when it is not given; named where that is
    not the option's own name (--no_cls sets cls)."""
    if not action.option_strings or action.default is argparse.SUPPRESS:
        return ""
    default = action.default
    if isinstance(default, (list, tuple)):
        default = " ".join(map(str, default))
    own_names = {flag.lstrip("-").replace("-", "_") for flag in action.option_strings}
    return code(str(default) if action.dest in own_names else f"{action.dest}={default}")


def help_text(action: argparse.Action, prog: str) -> str:
    """The help with its %(...)s filled in as argparse fills them, less a closing
    "(default: X)" that only repeats the default column."""
    if not action.help or action.help is argparse.SUPPRESS:
        return ""
    params = dict(vars(action), prog=prog)
    if action.choices is not None:
        params["choices"] = ", ".join(map(str, action.choices))
    text = action.help % params
    repeated = f"(default: {action.default})"
    if text.endswith(repeated):
        text = text[: -len(repeated)].rstrip()
    return cell(text)


def group_table(actions: list[argparse.Action], prog: str) -> list[str]:
    rows = ["| option | default | help |", "| --- | --- | --- |"]
    rows += [f"| {code(option_text(a))} | {default_text(a)} | {help_text(a, prog)} |"
             for a in actions]
    return rows


def subcommand_table(action: argparse._SubParsersAction) -> list[str]:
    rows = ["| command | what it does |", "| --- | --- |"]
    rows += [f"| {code(choice.dest)} | {cell(choice.help or '')} |"
             for choice in action._choices_actions]
    return rows


def command_section(command: str, parser: argparse.ArgumentParser) -> list[str]:
    lines = [f"## `{command}`", ""]
    if parser.description:
        lines += ["```text", parser.description.strip("\n"), "```", ""]
    for action in subcommand_actions(parser):
        lines += subcommand_table(action) + [""]
    listed = set(map(id, documented_actions(parser)))
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if id(a) in listed]
        if actions:
            lines += [f"### {command.split()[-1]}: {group.title}", ""]
            lines += group_table(actions, parser.prog) + [""]
    return lines


def render() -> str:
    lines = [HEADER]
    for command, parser in commands():
        lines += command_section(command, parser)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).rstrip("\n") + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare docs/options.md with the parsers instead of writing it")
    options = parser.parse_args(argv)
    text = render()
    if options.check:
        if not OPTIONS_MD.is_file() or OPTIONS_MD.read_text(encoding="utf-8") != text:
            print("docs/options.md differs from the parsers; run: python docs/make_options.py")
            return 1
        return 0
    OPTIONS_MD.write_text(text, encoding="utf-8")
    print(f"wrote {OPTIONS_MD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
