"""Secrets in build environments: which names are secret, and how they are kept out of what the
factory shows or stores.

The rule:
  * `--secret-env COMPONENT:NAME` passes the parent's $NAME to one component's build; the value
    never comes from the command line (shell history, `ps`).
  * `--env COMPONENT:KEY=VALUE` with a KEY that looks secret (SECRET_NAME) is treated the same.
  * A secret's value reaches the build's processes only. The plan, `plan --json`, the manifest,
    the provenance inside wheels, build_env.sh and the build log show REDACTED in its place.
  * The build key holds the secret's name (with REDACTED as its value), never its value or a hash
    of it: a token does not decide a wheel's bytes, so rotating it must not rebuild anything; an
    unsalted hash of a short token could be guessed offline from a shared manifest, and a salted
    one would need a per-machine salt, which breaks "the same key on every machine".
  * The parent environment's secrets (HF_TOKEN, AWS_SECRET_ACCESS_KEY, GITHUB_TOKEN, ...) are
    dropped from every command the factory runs (runner.clean_environ) unless passed as above.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

from .errors import InputError
from .grammar import check_env_key

REDACTED = "***"

# Names whose values are credentials: a case-insensitive match anywhere, or a name ending in KEY
# (API_KEY, AWS_SECRET_ACCESS_KEY, WANDB_API_KEY). ACCESS_KEY catches AWS_ACCESS_KEY_ID.
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|ACCESS_KEY|KEY$", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    return SECRET_NAME.search(name) is not None


def parse_secret_env(values: Sequence[str], environ: Mapping[str, str] | None = None) -> dict[str, dict[str, str]]:
    """`--secret-env COMPONENT:NAME` options into {component: {name: value from the environment}}."""
    environ = os.environ if environ is None else environ
    out: dict[str, dict[str, str]] = {}
    for value in values:
        comp, sep, name = value.partition(":")
        if not sep or not comp or not name or "=" in name:
            raise InputError(f"--secret-env {value!r}: expected COMPONENT:NAME (the value is read from the "
                             "environment variable NAME, never given on the command line), e.g. "
                             "--secret-env vllm:HF_TOKEN")
        check_env_key(name, f"--secret-env {value!r}")
        if name not in environ:
            raise InputError(f"--secret-env {value}: ${name} is not set in this environment; export it first")
        out.setdefault(comp, {})[name] = environ[name]
    return out


def redact(text: str, values: Sequence[str]) -> str:
    """text with every secret value replaced by REDACTED (longest first, so a value that contains
    another is hidden whole)."""
    for v in sorted(values, key=len, reverse=True):
        if v:
            text = text.replace(v, REDACTED)
    return text


# How long one word of a shown command may be (a target, a release name); longer ones are cut.
SHOWN_WORD_MAX = 80


def _shown_word(value: str) -> str:
    """One positional argument as a lock file or message may show it: no control characters, a
    URL without its user, password, query or fragment (where tokens ride), at most SHOWN_WORD_MAX."""
    word = "".join(c if c.isprintable() else "?" for c in value)
    if "://" in word:
        with_secret = urlsplit(word)
        word = urlunsplit((with_secret.scheme, with_secret.hostname or "", with_secret.path, "", ""))
    return word if len(word) <= SHOWN_WORD_MAX else word[:SHOWN_WORD_MAX - 3] + "..."


def shown_command(ctx: object | None = None) -> str:
    """The factory's own command line as every lock file and message shows it: the program, the
    subcommand and its positional arguments (the targets), never an option or its value and never
    sys.argv (an --env value may be a token; a lock file is readable by every user)."""
    import click  # the CLI's own library; imported here so that this module stays a leaf

    context = ctx if isinstance(ctx, click.Context) else click.get_current_context(silent=True)
    if context is None:
        return "wheelfactory"
    words = []
    chain = context
    while chain.parent is not None:  # the subcommands' names; the program is always "wheelfactory"
        words.insert(0, _shown_word(chain.info_name or ""))
        chain = chain.parent
    for param in context.command.params:
        if isinstance(param, click.Argument):
            value = context.params.get(param.name or "")
            values = value if isinstance(value, (tuple, list)) else () if value is None else (value,)
            words += [_shown_word(str(v)) for v in values]
    return " ".join(["wheelfactory", *words])
