"""The grammars of values that reach command lines, environments and generated files.

A release file is data, shared and extended by others: a value in it must never become an
option of a tool (`git ls-remote --upload-pack=...`), a line of a requirements file
(`--extra-index-url ...`) or a line of a Dockerfile (`RUN ...`). Each value is checked here,
when it is loaded, against the grammar of what it names (a git URL and ref, a PEP 508 name, a
version, an OCI tag and repository, an environment variable); every refusal is an InputError
naming where the value came from and what to write instead. The commands that use the values
also put `--` before their positional arguments, so that a value that slipped past is data.
"""

from __future__ import annotations

import errno
import os
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from .errors import InputError

# The longest version taken: PEP 440 versions of real packages are far shorter; a bound keeps a
# 5000-digit "version" out of int() and out of file names.
MAX_VERSION_LENGTH = 128
MAX_NAME_LENGTH = 200  # a distribution name (PyPI allows far less in practice)
MAX_REF_LENGTH = 255
# How deep a release file's tables may nest (a real one is 6 deep: components.vllm.extra_sources.x.git)
# and how long an `extends` chain may be: beyond either, a clean message instead of a RecursionError.
MAX_TABLE_DEPTH = 16
MAX_EXTENDS_DEPTH = 32

HEX40 = re.compile(r"[0-9a-f]{40}")
ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)

# OCI distribution reference grammar (distribution/reference, regexp.go).
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
OCI_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
OCI_REPOSITORY = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*", re.ASCII)
OCI_REGISTRY = re.compile(rf"{_DOMAIN}(?:/{_PATH_COMPONENT})*", re.ASCII)
OCI_NAME_MAX = 255  # registry/repository together
# Label keys: reverse-DNS, lower case (Docker's and OCI's recommendation).
LABEL_NAMESPACE = re.compile(r"[a-z0-9]+(?:[.-][a-z0-9]+)*", re.ASCII)

# git URLs: a scheme git speaks (http and git are plain text: transport.py asks for the opt-in),
# scp-like user@host:path, or a local path. `<transport>::<address>` (ext::, fd::) runs commands.
GIT_SCHEMES = {"https", "http", "git", "ssh", "git+ssh", "ssh+git", "file"}
_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_SCP_LIKE = re.compile(r"(?:([A-Za-z0-9._-]+)@)?([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):(.*)", re.ASCII)
# git check-ref-format: characters a ref never has.
_REF_BAD_CHARS = set(" ~^:?*[\\")

FREE_TEXT = "\t\n"  # the only control characters taken, and only where a value is prose


def control_characters(text: str, allowed: str = "") -> list[str]:
    """The control characters (Unicode Cc: C0, DEL, C1) in text, other than `allowed`, as escapes."""
    return sorted({repr(c)[1:-1] for c in text if unicodedata.category(c) == "Cc" and c not in allowed})


def check_text(value: str, where: str, allowed: str = "") -> str:
    """Refuse a string with control characters (a newline would end a Dockerfile or requirements
    line, a NUL every command line and environment)."""
    bad = control_characters(value, allowed)
    if bad:
        raise InputError(f"{where}: {value!r} contains control character(s) {', '.join(bad)}; "
                         "remove them (a value here ends up in commands and generated files)")
    return value


def check_tree(data: Any, where: str, prose: frozenset[tuple[str, ...]] = frozenset(), path: tuple[str, ...] = ()
               ) -> None:
    """Every key and string of parsed TOML free of control characters, and nested at most
    MAX_TABLE_DEPTH deep. `prose` names the paths ('*' matching any key) whose strings may hold
    tabs and newlines (a description, a reason, an environment value)."""
    if len(path) > MAX_TABLE_DEPTH:
        raise InputError(f"{where}: tables or arrays nested more than {MAX_TABLE_DEPTH} deep (at "
                         f"{'.'.join(path[:4])}...); a release file is a few tables deep")
    shown = f"[{'.'.join(path[:-1])}].{path[-1]}" if len(path) > 1 else (path[0] if path else "(top level)")
    if isinstance(data, Mapping):
        for key, value in data.items():
            check_text(str(key), f"{where} key {key!r}" + (f" in {shown}" if path else ""))
            check_tree(value, where, prose, path + (str(key),))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            check_tree(value, where, prose, path + (str(i),))
    elif isinstance(data, str):
        free = any(len(p) == len(path) and all(a in ("*", b) for a, b in zip(p, path, strict=True)) for p in prose)
        check_text(data, f"{where} {shown}", FREE_TEXT if free else "")


def check_version_text(version: str, where: str) -> str:
    """ASCII, no whitespace, bounded: what every version must be before its own grammar is asked
    (Python's \\d and int() take full-width digits, which no tool downstream reads as digits)."""
    if not version.isascii() or any(c.isspace() for c in version) or control_characters(version):
        raise InputError(f"{where}: bad version {version!r}: a version is ASCII letters, digits and "
                         "punctuation without spaces, e.g. 2.10.0 (full-width digits are not digits here)")
    if len(version) > MAX_VERSION_LENGTH:
        raise InputError(f"{where}: bad version {version[:20]!r}... ({len(version)} characters): a version has at most "
                         f"{MAX_VERSION_LENGTH}")
    return version


def check_distribution_name(name: str, where: str) -> str:
    """A PEP 508 distribution name (what pip and uv read as a package, never as an option or URL)."""
    try:  # packaging's PEP 508 parser: a bare name parses to itself, with nothing around it
        req = Requirement(name)
        ok = (name.isascii() and len(name) <= MAX_NAME_LENGTH and req.name == name
              and not (req.extras or req.specifier or req.url or req.marker))
    except InvalidRequirement:
        ok = False
    if not ok:
        raise InputError(f"{where}: {name[:80]!r} is not a package name: a name is ASCII letters, digits, '.', '_' "
                         "and '-', starting and ending with a letter or digit (PEP 508), e.g. transformers")
    return name


RELEASE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}", re.ASCII)


def _grammar(value: str, ok: bool, where: str, what: str, how: str) -> str:
    """value when `ok` (it fits its grammar), else the one form of refusal: where, what, the value
    (cut at 80 characters) and how such a value is written."""
    if not ok:
        raise InputError(f"{where}: bad {what} {value[:80]!r}: {how}")
    return value


def check_release_name(name: str, where: str) -> str:
    """A release name written as a file name (releases/<name>.toml): no '/', no leading '.' or '-'."""
    return _grammar(name, bool(RELEASE_NAME.fullmatch(name)), where, "release name",
                    "up to 100 letters, digits, '.', '_', '+' and '-', starting with a letter or digit, e.g. 0.15.0-t4")


def check_env_key(key: str, where: str) -> str:
    """An environment variable's name: a shell identifier (no '=', no NUL, not empty)."""
    if not ENV_KEY.fullmatch(key):
        raise InputError(f"{where}: {key!r} is not an environment variable name: use letters, digits and '_', "
                         "not starting with a digit, e.g. MAX_JOBS")
    return key


def check_env_value(value: str, where: str) -> str:
    """An environment variable's value: anything a process environment can hold (no NUL)."""
    if "\0" in value:
        raise InputError(f"{where}: the value contains a NUL character, which no process environment can "
                         "hold; remove it")
    return value


def check_git_ref(ref: str, where: str) -> str:
    """A tag, branch or 40-hex commit by git check-ref-format's rules, never an option."""
    def bad(why: str) -> InputError:
        return InputError(f"{where}: bad git ref {ref[:80]!r}: {why}; give a tag, a branch or a 40-hex commit, "
                          "e.g. ref = 'v2.29.2-1'")
    if not ref:
        raise bad("it is empty")
    if HEX40.fullmatch(ref):
        return ref
    if ref.startswith("-"):
        raise bad("it starts with '-' (git would read it as an option)")
    if len(ref) > MAX_REF_LENGTH:
        raise bad(f"longer than {MAX_REF_LENGTH} characters")
    if control_characters(ref) or any(c in _REF_BAD_CHARS for c in ref):
        raise bad("a ref has no spaces, control characters or any of ~ ^ : ? * [ \\")
    if ".." in ref or "@{" in ref or "//" in ref or ref == "@":
        raise bad("a ref has no '..', '@{' or '//' and is not '@'")
    if ref.startswith("/") or ref.endswith(("/", ".")):
        raise bad("a ref neither starts with '/' nor ends with '/' or '.'")
    if any(part.startswith(".") or part.endswith(".lock") for part in ref.split("/")):
        raise bad("no part of a ref starts with '.' or ends with '.lock'")
    return ref


def git_url_kind(url: str) -> str:
    """'url' (scheme://), 'scp' (user@host:path) or 'path' (a local repository), as git reads it."""
    if _URL_SCHEME.match(url):
        return "url"
    head = url.split("/", 1)[0]
    if ":" in head and _SCP_LIKE.fullmatch(url):
        return "scp"
    return "path"


def check_git_url(url: str, where: str) -> str:
    """A git repository git will only fetch from: never an option, never `transport::address`,
    a scheme git speaks, or a local path. (Plain-text transports are transport.py's to refuse.)"""
    def bad(why: str) -> InputError:
        return InputError(f"{where}: bad git URL {url[:120]!r}: {why}; give an https:// URL (or ssh://, "
                          "user@host:path, a local path)")
    if not url:
        raise bad("it is empty")
    check_text(url, where)
    if url.startswith("-"):
        raise bad("it starts with '-' (git would read it as an option)")
    if url != url.strip():
        raise bad("it starts or ends with whitespace")
    kind = git_url_kind(url)
    if "::" in url.split("/", 1)[0] or (kind != "url" and "::" in url):
        raise bad("'<transport>::<address>' runs a helper program")
    if kind == "url":
        scheme = _URL_SCHEME.match(url)[1].lower()  # type: ignore[index]
        if scheme not in GIT_SCHEMES:
            raise bad(f"unknown scheme {scheme!r} (known: {', '.join(sorted(GIT_SCHEMES))})")
        host = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
        if host.startswith("-"):
            raise bad("its host starts with '-' (ssh would read it as an option)")
    elif kind == "scp":
        m = _SCP_LIKE.fullmatch(url)
        assert m is not None
        if (m[1] or "").startswith("-") or m[2].startswith("-"):
            raise bad("its user or host starts with '-' (ssh would read it as an option)")
    return url


def check_path_length(path: Path, where: str) -> Path:
    """A path the file system can name: no component longer than NAME_MAX, the whole under PATH_MAX."""
    text = os.fsencode(str(path))
    name_max, path_max = 255, 4096
    longest = max((len(p) for p in text.split(b"/")), default=0)
    if longest > name_max or len(text) >= path_max:
        what = (f"a name of {longest} bytes (at most {name_max})" if longest > name_max
                else f"{len(text)} bytes (at most {path_max - 1})")
        raise InputError(f"{where}: path {str(path)[:60]!r}... is too long for the file system: {what}; "
                         f"use a shorter path ({os.strerror(errno.ENAMETOOLONG)})")
    return path


def check_oci_tag(tag: str, where: str) -> str:
    """An image tag by the OCI reference grammar: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}."""
    return _grammar(tag, bool(OCI_TAG.fullmatch(tag)), where, "image tag",
                    "a tag is up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-', "
                    "e.g. tag = '0.15.0-t4'")


def check_oci_repository(repository: str, where: str) -> str:
    """An image repository by the OCI reference grammar: lower-case path components joined by '/'."""
    ok = bool(OCI_REPOSITORY.fullmatch(repository)) and len(repository) <= OCI_NAME_MAX
    return _grammar(repository, ok, where, "image repository",
                    "lower-case letters and digits, separated by '.', '_', '__' or '-', in parts joined by '/' "
                    "(at most 255 characters), e.g. 'dgx-spark-vllm' or 'me/vllm'; a registry goes in --registry")


def check_oci_registry(registry: str, where: str) -> str:
    """A registry prefix: a host (with an optional port) and optional namespace path components."""
    ok = bool(OCI_REGISTRY.fullmatch(registry.rstrip("/"))) and len(registry) <= OCI_NAME_MAX
    return _grammar(registry, ok, where, "registry", "a host name (with an optional :port) and optional "
                                                     "lower-case path parts, e.g. ghcr.io/me or localhost:5000")


def check_label_namespace(namespace: str, where: str) -> str:
    """A label key prefix: reverse-DNS, lower-case letters and digits separated by '.' or '-'."""
    return _grammar(namespace, bool(LABEL_NAMESPACE.fullmatch(namespace)), where, "label namespace",
                    "lower-case letters and digits separated by '.' or '-', e.g. dev.wheelfactory")
